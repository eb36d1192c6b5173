package deploy_test

import (
	"slices"
	"testing"
)

func TestDockerignoreMatch(t *testing.T) {
	rules, err := parseDockerignore(`
# comment
.git
**/node_modules
*.test
**/*.md
bench/results
docs
!docs/keep.md
`)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path string
		want bool
	}{
		{".git/config", true},
		{".gitignore", false},
		{"e2e/sdk/node_modules/axios/index.js", true},
		{"node_modules/x", true},
		{"kalshitest.test", true},
		{"cmd/kproxy/kproxy.test", false}, // "*.test" is anchored at the root
		{"README.md", true},
		{"cmd/kproxy/notes.md", true},
		{"bench/results/run1.txt", true},
		{"bench/bench.go", false},
		{"docs/sidecar.md", true},
		{"docs/keep.md", false},
		{"go.mod", false},
		{"cmd/kproxy/main.go", false},
		{"config.yaml", false},
	}
	for _, tt := range tests {
		if got := rules.Excluded(tt.path); got != tt.want {
			t.Errorf("Excluded(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

func TestShellWords(t *testing.T) {
	vars := map[string]string{"VERSION": "v1.2.3"}
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{
			in:   `CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/kproxy ./cmd/kproxy`,
			want: []string{"CGO_ENABLED=0", "go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=v1.2.3", "-o", "/out/kproxy", "./cmd/kproxy"},
		},
		{in: `echo '$VERSION' $VERSION`, want: []string{"echo", "$VERSION", "v1.2.3"}},
		{in: `a\ b "c\"d"`, want: []string{"a b", `c"d`}},
		{in: `go build && rm -rf /`, wantErr: true},
		{in: `echo ${NOPE}`, wantErr: true},
		{in: `echo "open`, wantErr: true},
	}
	for _, tt := range tests {
		got, err := shellWords(tt.in, vars)
		if (err != nil) != tt.wantErr {
			t.Errorf("shellWords(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && !slices.Equal(got, tt.want) {
			t.Errorf("shellWords(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseDockerfileJoinsContinuations(t *testing.T) {
	ins, err := parseDockerfile("# syntax=docker/dockerfile:1\nFROM a AS b\nRUN --mount=type=cache,target=/x \\\n  # a comment inside\n  go build \\\n  ./cmd/x\nUSER 1:1\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(ins) != 3 {
		t.Fatalf("got %d instructions, want 3: %+v", len(ins), ins)
	}
	run := ins[1]
	if run.Cmd != "RUN" || run.Args != "go build ./cmd/x" || !slices.Equal(run.Flags, []string{"--mount=type=cache,target=/x"}) || run.Line != 3 {
		t.Errorf("RUN = %+v, want flags [--mount=type=cache,target=/x], args %q, line 3", run, "go build ./cmd/x")
	}
}

func TestQuantities(t *testing.T) {
	for in, want := range map[string]int64{"384Mi": 384 << 20, "1Gi": 1 << 30, "500M": 500e6, "1.5Gi": 3 << 29, "1024": 1024} {
		if got, err := quantity(in); err != nil || got != want {
			t.Errorf("quantity(%q) = %d, %v, want %d", in, got, err, want)
		}
	}
	for in, want := range map[string]int64{"384m": 384 << 20, "1g": 1 << 30, "512k": 512 << 10, "100": 100, "2GB": 2 << 30} {
		if got, err := dockerBytes(in); err != nil || got != want {
			t.Errorf("dockerBytes(%q) = %d, %v, want %d", in, got, err, want)
		}
	}
}
