package kubernetes

// Every manifest in this directory, decoded strictly into its Kubernetes
// type (an unknown or misspelt field, a duplicate key or a value of the
// wrong type fails), and checked against mp-hsm itself: every flag and
// MP_HSM_* variable given to the daemon is one that `mp-hsm serve --help`
// shows, every file the daemon is pointed at is a key of a Secret or
// ConfigMap mounted at that directory, probes and Prometheus reach the
// port the daemon listens on, and selectors select the Deployment's pods.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// kinds are the types a manifest may hold.
var kinds = map[string]func() any{
	"v1/ConfigMap":                       func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                          func() any { return &corev1.Secret{} },
	"v1/Service":                         func() any { return &corev1.Service{} },
	"apps/v1/Deployment":                 func() any { return &appsv1.Deployment{} },
	"networking.k8s.io/v1/NetworkPolicy": func() any { return &networkingv1.NetworkPolicy{} },
	"policy/v1/PodDisruptionBudget":      func() any { return &policyv1.PodDisruptionBudget{} },
}

// docSep splits a YAML stream into its documents.
var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decode reads every document of a manifest file strictly.
func decode(t *testing.T, file string) []any {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var objs []any
	for i, doc := range docSep.Split(string(data), -1) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("%s, document %d: %v", file, i+1, err)
		}
		if tm.Kind == "" && strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
		if !ok {
			t.Fatalf("%s, document %d: apiVersion %q kind %q is not one this test knows", file, i+1, tm.APIVersion, tm.Kind)
		}
		obj := newObj()
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("%s, document %d (%s): %v", file, i+1, tm.Kind, err)
		}
		objs = append(objs, obj)
	}
	return objs
}

func stripComments(doc string) string {
	var b strings.Builder
	for line := range strings.Lines(doc) {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// help is what mp-hsm says of its options.
type help struct {
	serveFlags map[string]bool // long names of serve's options
	envs       map[string]bool // MP_HSM_* variables, serve's and global
	serveText  string
}

var flagRe = regexp.MustCompile(`^\s+--([a-z0-9][-a-z0-9]*)`)
var envRe = regexp.MustCompile(`\$(MP_HSM_[A-Z0-9_]+)`)

// mpHSMHelp builds mp-hsm from this checkout and reads its help.
func mpHSMHelp(t *testing.T) help {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "mp-hsm")
	run := func(dir, name string, args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir, cmd.WaitDelay = dir, 5*time.Second
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errOut.String())
		}
		return out.String()
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go on PATH to build with: %v", err)
	}
	run("../..", goTool, "build", "-o", bin, "./cmd/mp-hsm")
	serve, global := run("", bin, "serve", "--help"), run("", bin, "--help")
	h := help{serveFlags: map[string]bool{}, envs: map[string]bool{}, serveText: serve}
	_, opts, ok := strings.Cut(serve, "\nOPTIONS:\n")
	if !ok {
		t.Fatalf("mp-hsm serve --help has no OPTIONS:\n%s", serve)
	}
	for line := range strings.Lines(opts) {
		if m := flagRe.FindStringSubmatch(line); m != nil {
			h.serveFlags[m[1]] = true
		}
	}
	for _, m := range envRe.FindAllStringSubmatch(serve+global, -1) {
		h.envs[m[1]] = true
	}
	if len(h.serveFlags) < 20 || !h.serveFlags["listen"] || !h.envs["MP_HSM_MODULE"] {
		t.Fatalf("read only %d flags and %d variables from mp-hsm's help", len(h.serveFlags), len(h.envs))
	}
	return h
}

func TestManifests(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) < 2 {
		t.Fatalf("manifests: %v, %v", files, err)
	}
	h := mpHSMHelp(t)
	for _, file := range files {
		t.Run(file, func(t *testing.T) {
			objs := decode(t, file)
			var deps []*appsv1.Deployment
			secrets, configMaps := map[string]map[string]bool{}, map[string]map[string]string{}
			for _, o := range objs {
				switch o := o.(type) {
				case *appsv1.Deployment:
					deps = append(deps, o)
				case *corev1.Secret:
					secrets[o.Name] = map[string]bool{}
					for k := range o.StringData {
						secrets[o.Name][k] = true
					}
					for k := range o.Data {
						secrets[o.Name][k] = true
					}
				case *corev1.ConfigMap:
					configMaps[o.Name] = o.Data
				}
			}
			if len(deps) != 1 {
				t.Fatalf("%d Deployments, want one", len(deps))
			}
			d := deps[0]
			pod := labels.Set(d.Spec.Template.Labels)
			sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
			if err != nil || !sel.Matches(pod) {
				t.Errorf("the Deployment's selector does not select its pods (%v)", err)
			}
			for _, o := range objs {
				switch o := o.(type) {
				case *corev1.Service:
					if !labels.SelectorFromSet(o.Spec.Selector).Matches(pod) {
						t.Errorf("Service %s selects no pod of the Deployment", o.Name)
					}
				case *networkingv1.NetworkPolicy:
					if s, err := metav1.LabelSelectorAsSelector(&o.Spec.PodSelector); err != nil || !s.Matches(pod) {
						t.Errorf("NetworkPolicy %s does not apply to the Deployment's pods (%v)", o.Name, err)
					}
				case *policyv1.PodDisruptionBudget:
					if s, err := metav1.LabelSelectorAsSelector(o.Spec.Selector); err != nil || !s.Matches(pod) {
						t.Errorf("PodDisruptionBudget %s does not select the Deployment's pods (%v)", o.Name, err)
					}
				}
			}
			n := 0
			for _, c := range d.Spec.Template.Spec.Containers {
				if strings.Contains(c.Image, "mp-hsm") {
					n++
					checkDaemon(t, h, d, c, secrets, configMaps)
				}
			}
			if n != 1 {
				t.Errorf("%d mp-hsm containers, want one", n)
			}
		})
	}
}

// checkDaemon checks the mp-hsm container c of Deployment d.
func checkDaemon(t *testing.T, h help, d *appsv1.Deployment, c corev1.Container, secrets map[string]map[string]bool, configMaps map[string]map[string]string) {
	t.Helper()
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("container %s: args %q, want serve and its flags", c.Name, c.Args)
	}
	settings := map[string][]string{} // flag -> values, from args and the config file
	for _, a := range c.Args[1:] {
		name, val, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !h.serveFlags[name] {
			t.Errorf("container %s: %q is not a flag of mp-hsm serve --help", c.Name, a)
		}
		settings[name] = append(settings[name], val)
	}
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "MP_HSM_") && !h.envs[e.Name] {
			t.Errorf("container %s: %s is no variable of mp-hsm's --help", c.Name, e.Name)
		}
	}

	// Files the daemon reads must be keys of what is mounted there.
	spec := d.Spec.Template.Spec
	fileIn := func(what, p string) {
		t.Helper()
		for _, m := range c.VolumeMounts {
			if path.Dir(p) != m.MountPath {
				continue
			}
			for _, v := range spec.Volumes {
				if v.Name != m.Name {
					continue
				}
				switch {
				case v.Secret != nil && secrets[v.Secret.SecretName][path.Base(p)]:
					return
				case v.ConfigMap != nil:
					if _, ok := configMaps[v.ConfigMap.Name][path.Base(p)]; ok {
						return
					}
				case v.EmptyDir != nil && what == "socket":
					return
				}
			}
		}
		t.Errorf("container %s: %s %s is not a key of a Secret or ConfigMap of this file mounted at %s", c.Name, what, p, path.Dir(p))
	}
	if cfg := settings["config"]; len(cfg) == 1 {
		fileIn("--config", cfg[0])
		var file map[string]any
		text := configMaps[volumeOf(spec, c, path.Dir(cfg[0]))][path.Base(cfg[0])]
		if _, err := toml.Decode(text, &file); err != nil {
			t.Fatalf("container %s: the config file: %v", c.Name, err)
		}
		for k, v := range file {
			if k == "client" {
				tables, _ := v.([]map[string]any)
				for _, tab := range tables {
					for ck, cv := range tab {
						if !regexp.MustCompile(`\b`+regexp.QuoteMeta(ck)+`\s+=`).MatchString(h.serveText) &&
							!strings.Contains(h.serveText, " "+ck+",") && !strings.Contains(h.serveText, " "+ck+":") {
							t.Errorf("config: [[client]] key %q is not one mp-hsm serve --help shows", ck)
						}
						if ck == "secret-file" {
							fileIn("secret-file", cv.(string))
						}
					}
				}
				continue
			}
			if !h.serveFlags[k] {
				t.Errorf("config: %q is not a flag of mp-hsm serve --help", k)
			}
			switch v := v.(type) {
			case []any:
				for _, x := range v {
					settings[k] = append(settings[k], fmt.Sprint(x))
				}
			default:
				settings[k] = append(settings[k], fmt.Sprint(v))
			}
		}
	}
	for _, f := range []string{"pin-file", "client-secret-file"} {
		for _, p := range settings[f] {
			fileIn("--"+f, p)
		}
	}

	// The TCP listener is what probes and Prometheus reach.
	var port string
	for _, l := range settings["listen"] {
		if rest, ok := strings.CutPrefix(l, "tcp:"); ok {
			port = rest[strings.LastIndex(rest, ":")+1:]
			if !strings.HasPrefix(rest, "0.0.0.0:") || len(settings["allow-remote"]) == 0 {
				t.Errorf("container %s: listener %s: kubelet's probes come from outside the pod: listen on 0.0.0.0 with --allow-remote", c.Name, l)
			}
		}
		if p, ok := strings.CutPrefix(l, "unix:"); ok {
			fileIn("socket", p)
		}
	}
	if port == "" {
		t.Fatalf("container %s: no tcp: listener for the probes and Prometheus", c.Name)
	}
	var named string
	for _, p := range c.Ports {
		if fmt.Sprint(p.ContainerPort) == port {
			named = p.Name
		}
	}
	if named == "" {
		t.Errorf("container %s: no containerPort %s", c.Name, port)
	}
	for probe, want := range map[*corev1.Probe]string{c.ReadinessProbe: "/readyz", c.LivenessProbe: "/healthz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != want ||
			(probe.HTTPGet.Port.String() != named && probe.HTTPGet.Port.String() != port) {
			t.Errorf("container %s: want an HTTP probe of %s on port %s (%s)", c.Name, want, port, named)
		}
	}
	if a := d.Spec.Template.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != port || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("the pod's Prometheus annotations %v do not scrape /metrics on %s", a, port)
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("container %s: want a read-only root and no privilege escalation", c.Name)
	}
}

// volumeOf is the name of the ConfigMap mounted at dir in container c.
func volumeOf(spec corev1.PodSpec, c corev1.Container, dir string) string {
	for _, m := range c.VolumeMounts {
		if m.MountPath != dir {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil {
				return v.ConfigMap.Name
			}
		}
	}
	return ""
}

// A misspelt field fails the strict decoding: the test would catch it.
func TestStrictDecodingRefusesATypo(t *testing.T) {
	doc := "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replica: 2\n"
	err := yaml.UnmarshalStrict([]byte(doc), &appsv1.Deployment{})
	if err == nil || !strings.Contains(err.Error(), `unknown field "replica"`) {
		t.Errorf("a Deployment with spec.replica: %v, want an unknown field error", err)
	}
}
