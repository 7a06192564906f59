package kstate

import (
	"strings"
	"testing"

	"github.com/kstate-dev/kstate/pkg/apis/config"
)

// FuzzParseSpec: any annotation value parses or is rejected without a
// panic, and every error names the kstate.dev/ annotation it is about.
func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{"true", "header:X", "4096", "0", "sync", "250ms", "entities=5,bytes=1Mi", "ns/name", "{x}", ""} {
		f.Add(SlotsAnnotationKey, s)
		f.Add(KeyAnnotationKey, s)
	}
	f.Add(PreloadAnnotationKey, "entities=-1")
	f.Add(GroupName+"/nope", "x")
	d, err := config.NewDefaultsConfigFromMap(map[string]string{config.AgentImageKey: "agent"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, key, value string) {
		if !IsKstateAnnotation(key) {
			key = GroupName + "/" + key
		}
		ann := map[string]string{EnabledAnnotationKey: "true", key: value}
		spec, ferr := ParseSpec("ns", "svc", ann, d)
		if ferr == nil {
			if spec == nil {
				t.Fatalf("ParseSpec(%q=%q): no error and no spec", key, value)
			}
			return
		}
		if spec != nil {
			t.Errorf("ParseSpec(%q=%q): an error and a spec", key, value)
		}
		for _, fe := range ferr.WrappedErrors() {
			for _, p := range fe.Paths {
				if !strings.HasPrefix(p, GroupName+"/") {
					t.Errorf("ParseSpec(%q=%q): error path %q is not a kstate.dev/ annotation: %v", key, value, p, fe)
				}
			}
		}
	})
}
