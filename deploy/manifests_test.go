package deploy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kproxy/kproxy/internal/config"
)

// minHeadroom is the least memory a kproxy container needs beyond
// cache.max_bytes (Go runtime, buffers, in-flight bodies).
const minHeadroom = 64 << 20

// loadConfig reads a config file the way kproxy does at startup, with env
// standing in for the process environment, and returns the effective,
// validated configuration.
func loadConfig(t *testing.T, name string, data []byte, env map[string]string) *config.Config {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(config.Sources{File: p, Getenv: func(k string) string { return env[k] }})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return cfg
}

// decodeConfig reads a config file over the defaults without the
// environment (to compare two files' settings).
func decodeConfig(t *testing.T, name string, data []byte) *config.Config {
	t.Helper()
	cfg := config.Default()
	if err := config.Decode(data, cfg); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return cfg
}

func checkEnvNames(t *testing.T, where string, names []string) {
	t.Helper()
	for _, n := range names {
		if strings.HasPrefix(n, "KPROXY_") && !slices.Contains(contractEnv, n) {
			t.Errorf("%s sets %s, which kproxy does not read (it reads %v)", where, n, contractEnv)
		}
	}
}

// --- docker compose ---

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Image       string            `yaml:"image"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []composeVolume   `yaml:"volumes"`
	Expose      []string          `yaml:"expose"`
	Ports       []string          `yaml:"ports"`
	Healthcheck *struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		StartPeriod string   `yaml:"start_period"`
		Retries     int      `yaml:"retries"`
	} `yaml:"healthcheck"`
	User            string   `yaml:"user"`
	ReadOnly        bool     `yaml:"read_only"`
	CapDrop         []string `yaml:"cap_drop"`
	SecurityOpt     []string `yaml:"security_opt"`
	MemLimit        string   `yaml:"mem_limit"`
	StopGracePeriod string   `yaml:"stop_grace_period"`
	DependsOn       map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Deploy struct {
		Resources struct {
			Limits struct {
				Memory string `yaml:"memory"`
			} `yaml:"limits"`
		} `yaml:"resources"`
	} `yaml:"deploy"`
}

// composeVolume is a volume in the short ("src:dst:ro") or long syntax.
type composeVolume struct {
	Type     string `yaml:"type"`
	Source   string `yaml:"source"`
	Target   string `yaml:"target"`
	ReadOnly bool   `yaml:"read_only"`
}

func (v *composeVolume) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		f := strings.Split(n.Value, ":")
		if len(f) < 2 {
			return fmt.Errorf("volume %q: want source:target[:ro]", n.Value)
		}
		v.Source, v.Target = f[0], f[1]
		v.ReadOnly = len(f) > 2 && slices.Contains(strings.Split(f[2], ","), "ro")
		return nil
	}
	type plain composeVolume
	return n.Decode((*plain)(v))
}

var interpolation = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}`)

// interpolate resolves ${VAR}, ${VAR:-default} and ${VAR:?msg} as Compose
// does with an empty environment: the default, or "".
func interpolate(s string) string {
	return interpolation.ReplaceAllStringFunc(s, func(m string) string {
		sub := interpolation.FindStringSubmatch(m)
		if strings.HasSuffix(sub[2], "-") {
			return sub[3]
		}
		return ""
	})
}

func TestComposeSidecar(t *testing.T) {
	raw := readRepoFile(t, "deploy/docker-compose.yml")
	var cf composeFile
	dec := yaml.NewDecoder(strings.NewReader(raw))
	if err := dec.Decode(&cf); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	kp, ok := cf.Services["kproxy"]
	if !ok {
		t.Fatal("docker-compose.yml has no kproxy service")
	}

	// Built from this repository's Dockerfile.
	if kp.Build == nil || filepath.Clean(filepath.Join("deploy", kp.Build.Context)) != "." || (kp.Build.Dockerfile != "" && kp.Build.Dockerfile != "Dockerfile") {
		t.Errorf("kproxy build = %+v, want context .. (the repository root) and the Dockerfile", kp.Build)
	}

	// Port 8080, reachable by the other services.
	if !slices.Contains(kp.Expose, servicePort) && !slices.ContainsFunc(kp.Ports, func(p string) bool { return strings.HasSuffix(p, ":"+servicePort) }) {
		t.Errorf("kproxy exposes %v / publishes %v, want port %s", kp.Expose, kp.Ports, servicePort)
	}
	for _, p := range kp.Ports {
		if strings.Count(p, ":") < 2 || !strings.HasPrefix(p, "127.0.0.1:") {
			t.Errorf("kproxy publishes %q: publish on the host's loopback only (127.0.0.1:8080:8080)", p)
		}
	}

	// Healthcheck: exec form (the image has no shell) running the binary.
	hc := kp.Healthcheck
	if hc == nil || len(hc.Test) < 3 || hc.Test[0] != "CMD" || hc.Test[1] != binaryPath || hc.Test[2] != "healthcheck" {
		t.Errorf("kproxy healthcheck test = %v, want [CMD %s healthcheck ...] (CMD-SHELL needs a shell, distroless has none)", hc, binaryPath)
	} else if u := flagValue(hc.Test, "-url"); u != "" && !strings.HasPrefix(u, "http://127.0.0.1:"+servicePort+"/healthz") {
		t.Errorf("kproxy healthcheck URL %q, want http://127.0.0.1:%s/healthz", u, servicePort)
	}

	// Environment: only kproxy's variables; the admin token from the
	// caller's environment, never written in the file.
	env := map[string]string{}
	var names []string
	for k, v := range kp.Environment {
		names = append(names, k)
		env[k] = interpolate(v)
	}
	checkEnvNames(t, "compose service kproxy", names)
	if v, ok := kp.Environment["KPROXY_ADMIN_TOKEN"]; !ok || !strings.HasPrefix(v, "${KPROXY_ADMIN_TOKEN") {
		t.Errorf("KPROXY_ADMIN_TOKEN = %q, want it taken from the environment (${KPROXY_ADMIN_TOKEN...})", v)
	}

	// The config file mounted read-only where KPROXY_CONFIG points.
	cfgPath := configPath
	if v := env["KPROXY_CONFIG"]; v != "" {
		cfgPath = v
	}
	var mount *composeVolume
	for i, v := range kp.Volumes {
		if v.Target == cfgPath || v.Target == path.Dir(cfgPath) {
			mount = &kp.Volumes[i]
		}
	}
	if mount == nil {
		t.Fatalf("kproxy mounts nothing at %s", cfgPath)
	}
	if !mount.ReadOnly {
		t.Errorf("config mount %s is not read-only", mount.Target)
	}
	src := filepath.Join("deploy", filepath.FromSlash(mount.Source))
	if mount.Target == path.Dir(cfgPath) {
		src = filepath.Join(src, path.Base(cfgPath))
	}
	cfg := loadConfig(t, src, []byte(readRepoFile(t, filepath.ToSlash(src))), env)
	if !strings.HasSuffix(cfg.Listen, ":"+servicePort) {
		t.Errorf("effective listen %q, want port %s", cfg.Listen, servicePort)
	}

	// Memory limit and stop grace period fit the config.
	limit := kp.MemLimit
	if limit == "" {
		limit = kp.Deploy.Resources.Limits.Memory
	}
	if limit == "" {
		t.Error("kproxy has no memory limit (mem_limit or deploy.resources.limits.memory)")
	} else if n, err := dockerBytes(limit); err != nil {
		t.Error(err)
	} else if min := int64(cfg.Cache.MaxBytes) + minHeadroom; n < min {
		t.Errorf("kproxy memory limit %s = %d bytes, want >= cache.max_bytes (%v) + 64MiB = %d", limit, n, cfg.Cache.MaxBytes, min)
	}
	if grace, err := time.ParseDuration(kp.StopGracePeriod); err != nil || grace <= time.Duration(cfg.ShutdownTimeout) {
		t.Errorf("kproxy stop_grace_period %q, want more than shutdown_timeout %v (Compose's default is 10s)", kp.StopGracePeriod, cfg.ShutdownTimeout)
	}

	// Hardening.
	if uid, _, _ := strings.Cut(kp.User, ":"); uid == "" || uid == "0" || uid == "root" {
		t.Errorf("kproxy user %q, want a non-root uid", kp.User)
	}
	if !kp.ReadOnly {
		t.Error("kproxy root filesystem is writable: set read_only: true")
	}
	if !slices.Contains(kp.CapDrop, "ALL") {
		t.Errorf("kproxy cap_drop %v, want ALL", kp.CapDrop)
	}
	if !slices.ContainsFunc(kp.SecurityOpt, func(s string) bool { return strings.HasPrefix(s, "no-new-privileges") }) {
		t.Errorf("kproxy security_opt %v, want no-new-privileges", kp.SecurityOpt)
	}

	// The script: starts once kproxy is healthy, and reaches it by service
	// name at the /trade-api/v2 base URL.
	scripts := 0
	for name, s := range cf.Services {
		if name == "kproxy" {
			continue
		}
		scripts++
		if d, ok := s.DependsOn["kproxy"]; !ok || d.Condition != "service_healthy" {
			t.Errorf("service %s: depends_on kproxy = %+v, want condition service_healthy", name, d)
		}
		base := "http://kproxy:" + servicePort + "/trade-api/v2"
		if !slices.ContainsFunc(mapValues(s.Environment), func(v string) bool { return v == base }) {
			t.Errorf("service %s has no environment variable with the base URL %s", name, base)
		}
	}
	if scripts == 0 {
		t.Error("docker-compose.yml has no script service next to kproxy")
	}
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// --- Kubernetes ---

type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		podSpec  `yaml:",inline"`
		Template struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	TerminationGracePeriodSeconds *int64         `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               *k8sSecContext `yaml:"securityContext"`
	InitContainers                []k8sContainer `yaml:"initContainers"`
	Containers                    []k8sContainer `yaml:"containers"`
	Volumes                       []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name  string `yaml:"name"`
			Items []struct {
				Key  string `yaml:"key"`
				Path string `yaml:"path"`
			} `yaml:"items"`
		} `yaml:"configMap"`
	} `yaml:"volumes"`
}

type k8sSecContext struct {
	RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
	RunAsUser                *int64 `yaml:"runAsUser"`
	ReadOnlyRootFilesystem   *bool  `yaml:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
	Capabilities             *struct {
		Drop []string `yaml:"drop"`
	} `yaml:"capabilities"`
}

type k8sContainer struct {
	Name          string    `yaml:"name"`
	Image         string    `yaml:"image"`
	RestartPolicy string    `yaml:"restartPolicy"`
	Ports         []k8sPort `yaml:"ports"`
	Env           []k8sEnv  `yaml:"env"`
	VolumeMounts  []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
	StartupProbe   *k8sProbe `yaml:"startupProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	Resources      struct {
		Limits   map[string]string `yaml:"limits"`
		Requests map[string]string `yaml:"requests"`
	} `yaml:"resources"`
	SecurityContext *k8sSecContext `yaml:"securityContext"`
}

type k8sPort struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
}

type k8sEnv struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		SecretKeyRef *struct {
			Name string `yaml:"name"`
			Key  string `yaml:"key"`
		} `yaml:"secretKeyRef"`
	} `yaml:"valueFrom"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string    `yaml:"path"`
		Port yaml.Node `yaml:"port"`
	} `yaml:"httpGet"`
}

func k8sObjects(t *testing.T, rel string) []k8sObject {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(readRepoFile(t, rel)))
	var out []k8sObject
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", rel, len(out)+1, err)
		}
		if o.Kind == "" || o.APIVersion == "" {
			t.Fatalf("%s: document %d has no kind or apiVersion", rel, len(out)+1)
		}
		out = append(out, o)
	}
}

// probePort resolves a probe's port (a number or a container port name).
func probePort(c k8sContainer, p *k8sProbe) int {
	if n, err := strconv.Atoi(p.HTTPGet.Port.Value); err == nil {
		return n
	}
	for _, cp := range c.Ports {
		if cp.Name == p.HTTPGet.Port.Value {
			return cp.ContainerPort
		}
	}
	return 0
}

func boolIs(b *bool, want bool) bool { return b != nil && *b == want }

func TestKubernetesSidecar(t *testing.T) {
	const rel = "deploy/kubernetes/pod.yaml"
	objs := k8sObjects(t, rel)
	configMaps := map[string]map[string]string{}
	var pod *podSpec
	for i, o := range objs {
		switch o.Kind {
		case "ConfigMap":
			configMaps[o.Metadata.Name] = o.Data
		case "Pod":
			pod = &objs[i].Spec.podSpec
		case "Deployment", "StatefulSet", "DaemonSet", "Job":
			pod = &objs[i].Spec.Template.Spec
		}
	}
	if pod == nil {
		t.Fatalf("%s has no Pod or workload", rel)
	}

	// kproxy: a regular container or a native sidecar (an init container
	// with restartPolicy Always; any other init container would block the
	// Pod forever).
	var kp *k8sContainer
	for i, c := range pod.InitContainers {
		if c.Name == "kproxy" {
			kp = &pod.InitContainers[i]
			if c.RestartPolicy != "Always" {
				t.Errorf("kproxy is an init container without restartPolicy: Always: the Pod would never start its script")
			}
		}
	}
	for i, c := range pod.Containers {
		if c.Name == "kproxy" {
			kp = &pod.Containers[i]
		}
	}
	if kp == nil {
		t.Fatal("no container named kproxy")
	}
	if !slices.ContainsFunc(kp.Ports, func(p k8sPort) bool { return strconv.Itoa(p.ContainerPort) == servicePort }) {
		t.Errorf("kproxy ports %+v, want containerPort %s", kp.Ports, servicePort)
	}
	for _, pr := range []struct {
		name  string
		probe *k8sProbe
		path  string
	}{
		{"livenessProbe", kp.LivenessProbe, "/healthz"},
		{"readinessProbe", kp.ReadinessProbe, "/readyz"},
	} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			t.Errorf("kproxy has no HTTP %s", pr.name)
			continue
		}
		if pr.probe.HTTPGet.Path != pr.path || strconv.Itoa(probePort(*kp, pr.probe)) != servicePort {
			t.Errorf("kproxy %s = GET %s on port %d, want GET %s on %s", pr.name, pr.probe.HTTPGet.Path, probePort(*kp, pr.probe), pr.path, servicePort)
		}
	}

	// Environment: only kproxy's variables; the admin token from a Secret.
	env := map[string]string{}
	var names []string
	tokenFromSecret := false
	for _, e := range kp.Env {
		names = append(names, e.Name)
		env[e.Name] = e.Value
		if e.Name == "KPROXY_ADMIN_TOKEN" {
			if e.Value != "" {
				t.Error("KPROXY_ADMIN_TOKEN has a literal value: take it from a Secret (secretKeyRef)")
			}
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name != "" {
				tokenFromSecret = true
				env[e.Name] = "token-from-secret"
			}
		}
	}
	checkEnvNames(t, "kproxy container", names)
	if !tokenFromSecret {
		t.Error("KPROXY_ADMIN_TOKEN does not come from a Secret (valueFrom.secretKeyRef)")
	}

	// The ConfigMap's config.yaml is mounted where KPROXY_CONFIG points, and
	// it is a valid kproxy config.
	cfgPath := configPath
	if v := env["KPROXY_CONFIG"]; v != "" {
		cfgPath = v
	}
	var data string
	for _, m := range kp.VolumeMounts {
		if path.Clean(m.MountPath) != path.Dir(cfgPath) {
			continue
		}
		if !m.ReadOnly {
			t.Errorf("config mount %s is not readOnly", m.MountPath)
		}
		for _, v := range pod.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			key := path.Base(cfgPath)
			for _, it := range v.ConfigMap.Items {
				if it.Path == path.Base(cfgPath) {
					key = it.Key
				}
			}
			data = configMaps[v.ConfigMap.Name][key]
		}
	}
	if data == "" {
		t.Fatalf("no ConfigMap in %s provides %s to the kproxy container", rel, cfgPath)
	}
	cfg := loadConfig(t, rel+" ConfigMap", []byte(data), env)
	if !strings.HasSuffix(cfg.Listen, ":"+servicePort) {
		t.Errorf("effective listen %q, want port %s", cfg.Listen, servicePort)
	}

	// Resources and shutdown fit the config.
	if lim, ok := kp.Resources.Limits["memory"]; !ok {
		t.Error("kproxy has no memory limit")
	} else if n, err := quantity(lim); err != nil {
		t.Error(err)
	} else if min := int64(cfg.Cache.MaxBytes) + minHeadroom; n < min {
		t.Errorf("kproxy memory limit %s = %d bytes, want >= cache.max_bytes (%v) + 64MiB = %d", lim, n, cfg.Cache.MaxBytes, min)
	}
	grace := 30 * time.Second // Kubernetes' default
	if g := pod.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if grace <= time.Duration(cfg.ShutdownTimeout) {
		t.Errorf("terminationGracePeriodSeconds %v, want more than shutdown_timeout %v", grace, cfg.ShutdownTimeout)
	}

	// Hardening, for every container.
	for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
		sc, psc := c.SecurityContext, pod.SecurityContext
		nonRoot := sc != nil && boolIs(sc.RunAsNonRoot, true) || psc != nil && boolIs(psc.RunAsNonRoot, true)
		if !nonRoot {
			t.Errorf("container %s: runAsNonRoot is not true", c.Name)
		}
		if sc == nil || !boolIs(sc.ReadOnlyRootFilesystem, true) {
			t.Errorf("container %s: readOnlyRootFilesystem is not true", c.Name)
		}
		if sc == nil || !boolIs(sc.AllowPrivilegeEscalation, false) {
			t.Errorf("container %s: allowPrivilegeEscalation is not false", c.Name)
		}
		if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("container %s: capabilities do not drop ALL", c.Name)
		}
		if c.Name != "kproxy" {
			base := "http://127.0.0.1:" + servicePort + "/trade-api/v2"
			if !slices.ContainsFunc(c.Env, func(e k8sEnv) bool { return e.Value == base }) {
				t.Errorf("container %s has no environment variable with the base URL %s", c.Name, base)
			}
		}
	}
}

// TestSidecarConfigsAgree keeps deploy/config.yaml (Compose) and the
// Kubernetes ConfigMap from drifting apart.
func TestSidecarConfigsAgree(t *testing.T) {
	var data string
	for _, o := range k8sObjects(t, "deploy/kubernetes/pod.yaml") {
		if o.Kind == "ConfigMap" && o.Data["config.yaml"] != "" {
			data = o.Data["config.yaml"]
		}
	}
	k8s := decodeConfig(t, "ConfigMap config.yaml", []byte(data))
	compose := decodeConfig(t, "deploy/config.yaml", []byte(readRepoFile(t, "deploy/config.yaml")))
	if !reflect.DeepEqual(k8s, compose) {
		t.Errorf("the ConfigMap's config.yaml and deploy/config.yaml differ:\n--- ConfigMap\n%s--- deploy/config.yaml\n%s", k8s.YAML(), compose.YAML())
	}
	if !bytes.Contains([]byte(data), []byte("max_bytes")) {
		t.Error("the ConfigMap does not set cache.max_bytes, which its memory limit is sized from")
	}
}
