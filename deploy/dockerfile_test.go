// Package deploy_test checks the container and orchestration files (the
// Dockerfile, .dockerignore, deploy/docker-compose.yml,
// deploy/kubernetes/pod.yaml) against the rules the image and its users rely
// on, and runs the Dockerfile's build command to check what it produces.
// No Docker engine is needed: the files are parsed and the build runs with
// the local go toolchain.
package deploy_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/internal/config"
)

// contractEnv is the set of environment variables kproxy reads
// (CONTRACT.md, "Environment").
var contractEnv = func() []string {
	names := []string{"KPROXY_CONFIG", "KPROXY_UPSTREAM"}
	for _, v := range config.Vars() {
		names = append(names, v.Name)
	}
	return names
}()

const (
	binaryPath   = "/usr/local/bin/kproxy"
	configPath   = "/etc/kproxy/config.yaml"
	servicePort  = "8080"
	nonRootUID   = 65532
	buildPackage = "./cmd/kproxy"
)

// repoRoot is the module root; go test runs in deploy/.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root %s has no go.mod: %v", root, err)
	}
	return root
}

func readRepoFile(t testing.TB, rel string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func dockerfile(t testing.TB) []stage {
	t.Helper()
	ins, err := parseDockerfile(readRepoFile(t, "Dockerfile"))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	for _, in := range ins {
		if in.Cmd == "ADD" {
			t.Errorf("Dockerfile:%d: ADD %s: use COPY (ADD fetches URLs and unpacks archives)", in.Line, in.Args)
		}
	}
	return stages(ins)
}

func find(body []instruction, cmd string) []instruction {
	var out []instruction
	for _, in := range body {
		if in.Cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// execForm decodes an exec-form (JSON array) argument list; ok is false for
// the shell form.
func execForm(args string) ([]string, bool) {
	var v []string
	if !strings.HasPrefix(strings.TrimSpace(args), "[") || json.Unmarshal([]byte(args), &v) != nil {
		return nil, false
	}
	return v, true
}

// envPairs parses ENV key=value pairs (quotes allowed, no legacy "ENV k v").
func envPairs(t *testing.T, in instruction) map[string]string {
	t.Helper()
	words, err := shellWords(in.Args, map[string]string{})
	if err != nil {
		t.Fatalf("Dockerfile:%d: ENV %s: %v", in.Line, in.Args, err)
	}
	out := map[string]string{}
	for _, w := range words {
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			t.Fatalf("Dockerfile:%d: ENV %s: use the key=value form", in.Line, in.Args)
		}
		out[k] = v
	}
	return out
}

// buildRun returns the build stage's RUN instruction that runs go build.
func buildRun(t testing.TB, st stage) instruction {
	t.Helper()
	var runs []instruction
	for _, in := range find(st.Body, "RUN") {
		if strings.Contains(in.Args, "go build") {
			runs = append(runs, in)
		}
	}
	if len(runs) != 1 {
		t.Fatalf("build stage has %d RUN instructions with `go build`, want exactly 1", len(runs))
	}
	return runs[0]
}

var goDirective = regexp.MustCompile(`(?m)^go (\d+)\.(\d+)(?:\.\d+)?\s*$`)

func TestDockerfileIsMultiStage(t *testing.T) {
	sts := dockerfile(t)
	if len(sts) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a build stage and a runtime stage", len(sts))
	}
	build, final := sts[0], sts[len(sts)-1]

	// Build stage: the official Go image, same minor version as go.mod.
	img := strings.TrimPrefix(strings.TrimPrefix(build.Image, "docker.io/"), "library/")
	tag, ok := strings.CutPrefix(img, "golang:")
	if !ok {
		t.Fatalf("build stage FROM %s, want the official golang image", build.Image)
	}
	if build.Name == "" {
		t.Errorf("build stage FROM %s has no AS name; the runtime stage should COPY --from it by name", build.Image)
	}
	m := goDirective.FindStringSubmatch(readRepoFile(t, "go.mod"))
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	if want := m[1] + "." + m[2]; !strings.HasPrefix(tag, want+"-") && tag != want && !strings.HasPrefix(tag, want+".") {
		t.Errorf("build stage image golang:%s, want Go %s (go.mod's go directive; official images set GOTOOLCHAIN=local)", tag, want)
	}

	// Runtime stage: distroless static or scratch, nothing to run a shell.
	if !strings.HasPrefix(final.Image, "gcr.io/distroless/static") && final.Image != "scratch" {
		t.Errorf("runtime stage FROM %s, want gcr.io/distroless/static* or scratch", final.Image)
	}
	if runs := find(final.Body, "RUN"); len(runs) > 0 {
		t.Errorf("runtime stage has RUN at line %d: the distroless runtime has no shell", runs[0].Line)
	}
}

func TestDockerfileBuildCommand(t *testing.T) {
	sts := dockerfile(t)
	build, final := sts[0], sts[len(sts)-1]
	run := buildRun(t, build)
	words, err := shellWords(run.Args, map[string]string{"VERSION": "v0.0.0-test"})
	if err != nil {
		t.Fatalf("Dockerfile:%d: %v", run.Line, err)
	}
	env, argv := splitEnv(words)
	if env["CGO_ENABLED"] != "0" {
		t.Errorf("Dockerfile:%d: build runs with CGO_ENABLED=%q, want 0 (a static binary for distroless)", run.Line, env["CGO_ENABLED"])
	}
	if len(argv) < 2 || argv[0] != "go" || argv[1] != "build" {
		t.Fatalf("Dockerfile:%d: build command %q, want `go build ...`", run.Line, argv)
	}
	if !slices.Contains(argv, "-trimpath") {
		t.Errorf("Dockerfile:%d: go build without -trimpath", run.Line)
	}
	ldflags := flagValue(argv, "-ldflags")
	if !strings.Contains(ldflags, "-X main.version=v0.0.0-test") {
		t.Errorf("Dockerfile:%d: -ldflags %q, want -X main.version=${VERSION}", run.Line, ldflags)
	}
	if argv[len(argv)-1] != buildPackage {
		t.Errorf("Dockerfile:%d: builds %s, want %s", run.Line, argv[len(argv)-1], buildPackage)
	}
	out := flagValue(argv, "-o")
	if out == "" {
		t.Fatalf("Dockerfile:%d: go build without -o", run.Line)
	}
	if args := find(build.Body, "ARG"); !slices.ContainsFunc(args, func(in instruction) bool {
		return strings.HasPrefix(in.Args, "VERSION=") || in.Args == "VERSION"
	}) {
		t.Errorf("build stage declares no ARG VERSION")
	}

	// The runtime stage copies that output to the binary path.
	copied := false
	for _, in := range find(final.Body, "COPY") {
		from, _ := in.flag("from")
		f := strings.Fields(in.Args)
		if (from == build.Name || from == "0") && len(f) == 2 && f[0] == out && f[1] == binaryPath {
			copied = true
		}
	}
	if !copied {
		t.Errorf("runtime stage has no `COPY --from=%s %s %s`", build.Name, out, binaryPath)
	}
}

func splitEnv(words []string) (map[string]string, []string) {
	env := map[string]string{}
	for len(words) > 0 {
		k, v, ok := strings.Cut(words[0], "=")
		if !ok || strings.HasPrefix(k, "-") || k == "" {
			break
		}
		env[k] = v
		words = words[1:]
	}
	return env, words
}

func flagValue(argv []string, name string) string {
	for i, a := range argv {
		if a == name && i+1 < len(argv) {
			return argv[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

func TestDockerfileRuntimeRules(t *testing.T) {
	sts := dockerfile(t)
	final := sts[len(sts)-1]

	// Config shipped at the documented path and named by KPROXY_CONFIG.
	if !slices.ContainsFunc(find(final.Body, "COPY"), func(in instruction) bool {
		_, from := in.flag("from")
		f := strings.Fields(in.Args)
		return !from && len(f) == 2 && f[0] == "config.yaml" && f[1] == configPath
	}) {
		t.Errorf("runtime stage does not COPY config.yaml to %s", configPath)
	}
	env := map[string]string{}
	for _, in := range find(final.Body, "ENV") {
		for k, v := range envPairs(t, in) {
			env[k] = v
		}
	}
	for k := range env {
		if !slices.Contains(contractEnv, k) {
			t.Errorf("ENV %s is not one of kproxy's variables %v", k, contractEnv)
		}
	}
	if env["KPROXY_CONFIG"] != configPath {
		t.Errorf("ENV KPROXY_CONFIG=%q, want %q", env["KPROXY_CONFIG"], configPath)
	}
	if env["KPROXY_LISTEN"] != ":"+servicePort {
		t.Errorf("ENV KPROXY_LISTEN=%q, want %q", env["KPROXY_LISTEN"], ":"+servicePort)
	}

	// Non-root user, numeric so that runAsNonRoot can verify it.
	users := find(final.Body, "USER")
	if len(users) == 0 {
		t.Fatal("runtime stage has no USER")
	}
	user := users[len(users)-1].Args
	uid, _, _ := strings.Cut(user, ":")
	if uid == "0" || uid == "root" || strings.Trim(uid, "0123456789") != "" {
		t.Errorf("USER %s, want a numeric non-root uid (65532)", user)
	}

	// The port.
	exposed := false
	for _, in := range find(final.Body, "EXPOSE") {
		for _, p := range strings.Fields(in.Args) {
			exposed = exposed || strings.TrimSuffix(p, "/tcp") == servicePort
		}
	}
	if !exposed {
		t.Errorf("runtime stage does not EXPOSE %s", servicePort)
	}

	// HEALTHCHECK in exec form (no shell in distroless) running the binary's
	// own healthcheck command.
	hcs := find(final.Body, "HEALTHCHECK")
	if len(hcs) != 1 {
		t.Fatalf("runtime stage has %d HEALTHCHECK instructions, want 1", len(hcs))
	}
	hc := hcs[0]
	cmd, rest, _ := strings.Cut(hc.Args, " ")
	argv, ok := execForm(rest)
	if cmd != "CMD" || !ok {
		t.Fatalf("HEALTHCHECK %s: want CMD in exec form [\"%s\",\"healthcheck\"]", hc.Args, binaryPath)
	}
	if len(argv) < 2 || argv[0] != binaryPath || argv[1] != "healthcheck" {
		t.Errorf("HEALTHCHECK runs %q, want %q healthcheck", argv, binaryPath)
	}
	if u := flagValue(argv, "-url"); u == "" && env["KPROXY_LISTEN"] != ":8080" {
		t.Errorf("HEALTHCHECK uses the default URL (port 8080) but KPROXY_LISTEN is %q", env["KPROXY_LISTEN"])
	}
	for _, f := range []string{"interval", "timeout", "start-period", "retries"} {
		if _, ok := hc.flag(f); !ok {
			t.Errorf("HEALTHCHECK has no --%s", f)
		}
	}

	// ENTRYPOINT in exec form so signals reach kproxy (PID 1) directly.
	eps := find(final.Body, "ENTRYPOINT")
	if len(eps) == 0 {
		t.Fatal("runtime stage has no ENTRYPOINT")
	}
	if ep, ok := execForm(eps[len(eps)-1].Args); !ok || len(ep) == 0 || ep[0] != binaryPath {
		t.Errorf("ENTRYPOINT %s, want exec form [%q]", eps[len(eps)-1].Args, binaryPath)
	}
}

func TestDockerignore(t *testing.T) {
	rules, err := parseDockerignore(readRepoFile(t, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{".git/HEAD", "e2e/sdk/node_modules/axios/package.json", "kalshitest.test"} {
		if !rules.Excluded(p) {
			t.Errorf(".dockerignore keeps %s in the build context", p)
		}
	}
	// Everything the Dockerfile COPYs from the context must be kept.
	for _, st := range dockerfile(t) {
		for _, in := range find(st.Body, "COPY") {
			if _, from := in.flag("from"); from {
				continue
			}
			f := strings.Fields(in.Args)
			for _, src := range f[:len(f)-1] {
				if src != "." && rules.Excluded(src) {
					t.Errorf("Dockerfile:%d: COPY %s, but .dockerignore excludes it", in.Line, src)
				}
			}
		}
	}
	for _, p := range []string{"go.mod", "go.sum", "config.yaml", "cmd/kproxy/main.go"} {
		if rules.Excluded(p) {
			t.Errorf(".dockerignore excludes %s, which the build needs", p)
		}
	}
}
