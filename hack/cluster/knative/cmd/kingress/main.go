// Command kingress is a TEST-ONLY Knative ingress for the e2e cluster built by
// hack/cluster/up.sh. It is test infrastructure, NOT part of kstate, and not
// an ingress anyone should run for real traffic.
//
// What it does:
//   - It reconciles KIngress objects (networking.internal.knative.dev) whose
//     ingress.class is kstate-test-ingress.ingress.networking.knative.dev:
//     it marks them NetworkConfigured and LoadBalancerReady, with the load
//     balancer IP set to -lb-ip, so Knative Routes become Ready.
//   - It reverse-proxies HTTP/1.1 and h2c requests arriving on -addr by Host
//     (public and cluster-local rules alike), path prefix, exact header
//     matches and weighted traffic splits, appending the rule's and split's
//     headers (Knative-Serving-Revision/Namespace, which the activator needs)
//     and honouring RewriteHost. The backend is the split's Service, dialled
//     at its ClusterIP (kube-proxy routes it to the activator or the pods).
//
// What it does not do: TLS, HTTP options (redirects), retries and timeouts
// from the KIngress, regex paths, probing of its own readiness across
// replicas, or anything for availability. It marks an Ingress Ready as soon
// as it has read it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	netclient "knative.dev/networking/pkg/client/clientset/versioned"
	netinformers "knative.dev/networking/pkg/client/informers/externalversions"
	netlisters "knative.dev/networking/pkg/client/listers/networking/v1alpha1"
)

// Class is the ingress.class this ingress serves; config-network's
// ingress-class must name it.
const Class = "kstate-test-ingress.ingress.networking.knative.dev"

type server struct {
	ings netlisters.IngressLister
	svcs corelisters.ServiceLister
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig path")
	addr := flag.String("addr", "10.200.0.1:80", "address to serve HTTP on")
	lbIP := flag.String("lb-ip", "10.200.0.1", "IP reported as the KIngress load balancer")
	flag.Parse()

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatalf("kingress: kubeconfig: %v", err)
	}
	kc := kubernetes.NewForConfigOrDie(cfg)
	nc := netclient.NewForConfigOrDie(cfg)
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()

	nf := netinformers.NewSharedInformerFactory(nc, 10*time.Minute)
	kf := informers.NewSharedInformerFactory(kc, 10*time.Minute)
	ingInf := nf.Networking().V1alpha1().Ingresses()
	svcInf := kf.Core().V1().Services()
	s := &server{ings: ingInf.Lister(), svcs: svcInf.Lister()}

	q := workqueue.NewRateLimitingQueue(workqueue.DefaultControllerRateLimiter())
	enqueue := func(obj any) {
		if k, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			q.Add(k)
		}
	}
	ingInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, o any) { enqueue(o) },
	})
	nf.Start(ctx.Done())
	kf.Start(ctx.Done())
	for t, ok := range nf.WaitForCacheSync(ctx.Done()) {
		if !ok {
			log.Fatalf("kingress: cache sync failed for %v", t)
		}
	}
	for t, ok := range kf.WaitForCacheSync(ctx.Done()) {
		if !ok {
			log.Fatalf("kingress: cache sync failed for %v", t)
		}
	}

	go func() {
		<-ctx.Done()
		q.ShutDown()
	}()
	go func() {
		for {
			k, quit := q.Get()
			if quit {
				return
			}
			if err := s.reconcile(ctx, nc, k.(string), *lbIP); err != nil {
				log.Printf("kingress: reconcile %s: %v (will retry)", k, err)
				q.AddRateLimited(k)
			} else {
				q.Forget(k)
			}
			q.Done(k)
		}
	}()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("kingress: listen %s: %v", *addr, err)
	}
	srv := &http.Server{Handler: h2c.NewHandler(s, &http2.Server{}), ReadHeaderTimeout: 30 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		_ = srv.Shutdown(sctx)
	}()
	log.Printf("kingress: class %s, serving on %s, load balancer IP %s", Class, *addr, *lbIP)
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		log.Fatalf("kingress: serve: %v", err)
	}
	os.Exit(0)
}

func (s *server) reconcile(ctx context.Context, nc netclient.Interface, key, lbIP string) error {
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	ing, err := s.ings.Ingresses(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	if ing.GetAnnotations()[networking.IngressClassAnnotationKey] != Class {
		return nil
	}
	if ing.IsReady() && ing.Status.ObservedGeneration == ing.Generation {
		return nil
	}
	ing = ing.DeepCopy()
	ing.Status.InitializeConditions()
	ing.Status.MarkNetworkConfigured()
	lb := []v1alpha1.LoadBalancerIngressStatus{{IP: lbIP}}
	ing.Status.MarkLoadBalancerReady(lb, lb)
	ing.Status.ObservedGeneration = ing.Generation
	_, err = nc.NetworkingV1alpha1().Ingresses(ns).UpdateStatus(ctx, ing, metav1.UpdateOptions{})
	if err == nil {
		log.Printf("kingress: %s/%s generation %d ready", ns, name, ing.Generation)
	}
	return err
}

// ServeHTTP finds the rule for the request's host, the path for its path and
// headers, picks a split by weight and proxies to that split's Service.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	path, split := s.route(host, r)
	if path == nil {
		http.Error(w, fmt.Sprintf("kstate test ingress: no KIngress rule for host %q path %q", host, r.URL.Path), http.StatusNotFound)
		return
	}
	target, err := s.backend(split)
	if err != nil {
		http.Error(w, "kstate test ingress: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	for k, v := range path.AppendHeaders {
		r.Header.Set(k, v)
	}
	for k, v := range split.AppendHeaders {
		r.Header.Set(k, v)
	}
	if path.RewriteHost != "" {
		r.Host = path.RewriteHost
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = target
			pr.Out.Host = r.Host
			pr.SetXForwarded()
		},
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, "kstate test ingress: backend "+target+": "+err.Error(), http.StatusBadGateway)
		},
	}
	rp.ServeHTTP(w, r)
}

func (s *server) route(host string, r *http.Request) (*v1alpha1.HTTPIngressPath, *v1alpha1.IngressBackendSplit) {
	all, err := s.ings.List(labels.Everything())
	if err != nil {
		return nil, nil
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	for _, ing := range all {
		if ing.GetAnnotations()[networking.IngressClassAnnotationKey] != Class || ing.DeletionTimestamp != nil {
			continue
		}
		for _, rule := range ing.Spec.Rules {
			if !hasHost(rule.Hosts, host) || rule.HTTP == nil {
				continue
			}
			// Longest path first; header-matching paths before the others.
			paths := append([]v1alpha1.HTTPIngressPath(nil), rule.HTTP.Paths...)
			sort.SliceStable(paths, func(i, j int) bool {
				if len(paths[i].Headers) != len(paths[j].Headers) {
					return len(paths[i].Headers) > len(paths[j].Headers)
				}
				return len(paths[i].Path) > len(paths[j].Path)
			})
			for i := range paths {
				p := &paths[i]
				if p.Path != "" && !strings.HasPrefix(r.URL.Path, p.Path) {
					continue
				}
				if !headersMatch(p.Headers, r.Header) {
					continue
				}
				return p, pick(p.Splits)
			}
		}
	}
	return nil, nil
}

func hasHost(hosts []string, host string) bool {
	for _, h := range hosts {
		if strings.EqualFold(h, host) {
			return true
		}
	}
	return false
}

func headersMatch(want map[string]v1alpha1.HeaderMatch, got http.Header) bool {
	for k, m := range want {
		if got.Get(k) != m.Exact {
			return false
		}
	}
	return true
}

func pick(splits []v1alpha1.IngressBackendSplit) *v1alpha1.IngressBackendSplit {
	if len(splits) == 0 {
		return nil
	}
	total := 0
	for _, s := range splits {
		total += s.Percent
	}
	if total <= 0 {
		return &splits[0]
	}
	n := rand.IntN(total)
	for i := range splits {
		if n < splits[i].Percent {
			return &splits[i]
		}
		n -= splits[i].Percent
	}
	return &splits[len(splits)-1]
}

// backend returns ClusterIP:port of the split's Service.
func (s *server) backend(split *v1alpha1.IngressBackendSplit) (string, error) {
	if split == nil {
		return "", fmt.Errorf("rule has no splits")
	}
	svc, err := s.svcs.Services(split.ServiceNamespace).Get(split.ServiceName)
	if err != nil {
		return "", fmt.Errorf("service %s/%s: %w", split.ServiceNamespace, split.ServiceName, err)
	}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return "", fmt.Errorf("service %s/%s has no ClusterIP", svc.Namespace, svc.Name)
	}
	port := split.ServicePort.IntValue()
	if split.ServicePort.Type == 1 { // a port name
		for _, p := range svc.Spec.Ports {
			if p.Name == split.ServicePort.StrVal {
				port = int(p.Port)
			}
		}
	}
	if port == 0 {
		return "", fmt.Errorf("service %s/%s has no port %s", svc.Namespace, svc.Name, split.ServicePort.String())
	}
	return net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(port)), nil
}
