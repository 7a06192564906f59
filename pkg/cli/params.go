package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/spf13/cobra"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	servingclientset "knative.dev/serving/pkg/client/clientset/versioned"
	"sigs.k8s.io/yaml"
)

// Output formats of -o/--output.
const (
	outputTable = "table"
	outputJSON  = "json"
	outputYAML  = "yaml"
)

// Params holds the global flags of the cluster commands and builds their
// clients, as kn's KnParams does. Clients are built on first use, so `dev`
// never needs a cluster; tests set NewClients to hand out fake clientsets.
type Params struct {
	// KubeconfigPath is --kubeconfig; "" means $KUBECONFIG, then
	// ~/.kube/config, then the in-cluster configuration.
	KubeconfigPath string
	// Namespace is --namespace; "" means the kubeconfig context's
	// namespace, then "default".
	Namespace string
	// Output is -o: table, json or yaml.
	Output string

	// NewClients builds the clients from a kubeconfig path ("" for the
	// default loading rules); nil means newClients.
	NewClients func(kubeconfig string) (*Clients, error)
	// HTTPClient sends the events of `send`; nil means http.DefaultClient
	// (with --timeout on the request's context).
	HTTPClient *http.Client
	// Now is the clock for ages shown to the user; nil means time.Now.
	Now func() time.Time

	clients *Clients
}

// Clients are the API clients of one cluster.
type Clients struct {
	Kube    kubernetes.Interface
	Serving servingclientset.Interface
	// Namespace is the kubeconfig context's namespace ("default" when it
	// names none).
	Namespace string
	// Host is the API server's address, for error messages.
	Host string
}

// Clients returns the clients, building them on first use.
func (p *Params) Clients() (*Clients, error) {
	if p.clients != nil {
		return p.clients, nil
	}
	build := p.NewClients
	if build == nil {
		build = newClients
	}
	c, err := build(p.KubeconfigPath)
	if err != nil {
		return nil, err
	}
	p.clients = c
	return c, nil
}

// namespace is --namespace, else the kubeconfig context's namespace.
func (p *Params) namespace(c *Clients) string {
	switch {
	case p.Namespace != "":
		return p.Namespace
	case c != nil && c.Namespace != "":
		return c.Namespace
	default:
		return "default"
	}
}

func (p *Params) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Params) httpClient() *http.Client {
	if p.HTTPClient != nil {
		return p.HTTPClient
	}
	return http.DefaultClient
}

// newClients loads the kubeconfig with kubectl's rules (--kubeconfig, else
// $KUBECONFIG, else ~/.kube/config, else the in-cluster configuration).
// It reads files only; it does not talk to the cluster.
func newClients(kubeconfig string) (*Clients, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	cfg, err := cc.ClientConfig()
	switch {
	case err == nil:
	case kubeconfig != "":
		return nil, fmt.Errorf("no cluster: --kubeconfig %s: %w", kubeconfig, err)
	case clientcmd.IsEmptyConfig(err):
		where := "~/.kube/config"
		if env := os.Getenv(clientcmd.RecommendedConfigPathEnvVar); env != "" {
			where = "KUBECONFIG=" + env
		}
		return nil, fmt.Errorf("no cluster: no kubeconfig found (looked at %s) and not running in a cluster; "+
			"pass --kubeconfig or set KUBECONFIG (or run kstate locally with `kn kstate dev`)", where)
	default:
		return nil, fmt.Errorf("no cluster: reading the kubeconfig: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, fmt.Errorf("no cluster: reading the kubeconfig's namespace: %w", err)
	}
	cfg.UserAgent = "kn-kstate"
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("no cluster: %w", err)
	}
	serving, err := servingclientset.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("no cluster: %w", err)
	}
	return &Clients{Kube: kube, Serving: serving, Namespace: ns, Host: cfg.Host}, nil
}

// apiError words a failed API call about what ("getting service "cart" in
// namespace "shop""). Not-found errors are the caller's to word.
func (c *Clients) apiError(what string, err error) error {
	var ue *url.Error
	switch {
	case errors.As(err, &ue):
		host := c.Host
		if host == "" {
			host = ue.URL
		}
		return fmt.Errorf("%s: cannot reach the cluster at %s: %w", what, host, ue.Err)
	case apierrs.IsForbidden(err):
		return fmt.Errorf("%s: forbidden: %w", what, err)
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}

// checkOutput validates -o before anything else runs.
func (p *Params) checkOutput() error {
	switch p.Output {
	case outputTable, outputJSON, outputYAML:
		return nil
	}
	return fmt.Errorf("-o %q: expected table, json or yaml", p.Output)
}

// print writes v as JSON or YAML, or calls table for -o table.
func (p *Params) print(w io.Writer, v any, table func(io.Writer) error) error {
	switch p.Output {
	case outputJSON:
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case outputYAML:
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	default:
		return table(w)
	}
}

// addGlobalFlags registers the cluster flags on the root, persistent so
// every command takes them.
func (p *Params) addGlobalFlags(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&p.KubeconfigPath, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the in-cluster configuration)")
	f.StringVarP(&p.Namespace, "namespace", "n", "", "namespace of the Service (default: the kubeconfig context's namespace, then \"default\")")
	f.StringVarP(&p.Output, "output", "o", outputTable, "output format: table, json or yaml")
}
