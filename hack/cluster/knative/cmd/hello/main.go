// Command hello is the stock Knative Service of the e2e tests: it answers
// every request with "hello from <revision> <pod>". It is TEST
// INFRASTRUCTURE, not part of kstate.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	rev, pod := os.Getenv("K_REVISION"), os.Getenv("HOSTNAME")
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s %s\n", rev, pod)
	})
	log.Printf("hello: listening on :%s", port)
	log.Fatal(http.ListenAndServe(":"+port, nil))
}
