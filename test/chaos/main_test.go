package chaos

import (
	"os"
	"testing"

	"github.com/kstate-dev/kstate/internal/proctest"
)

func TestMain(m *testing.M) { os.Exit(proctest.Main(m)) }
