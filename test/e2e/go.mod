module github.com/kstate-dev/kstate/test/e2e

go 1.26
