// Package docs_test checks that every file the user-facing documents name
// exists, so that a renamed or deleted file fails CI instead of a reader.
package docs_test

import (
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// root is the repository, seen from this package's directory.
const root = ".."

// documents lists the files whose references are checked, relative to the
// repository: the README, everything under docs/ and deploy/, and the
// other files a user reads to build and run kproxy.
func documents(t *testing.T) []string {
	t.Helper()
	docs := []string{"README.md", "config.yaml", "Dockerfile", ".dockerignore"}
	for _, dir := range []string{"docs", "deploy", "examples"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				return nil
			}
			rel, _ := filepath.Rel(root, p)
			if isText(rel) {
				docs = append(docs, filepath.ToSlash(rel))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return docs
}

func isText(p string) bool {
	switch path.Ext(p) {
	case ".md", ".yaml", ".yml", ".txt", ".py", ".sh", "":
		return true
	}
	return false
}

var (
	// mdLink is a markdown link or image target: [text](target).
	mdLink = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	// barePath is a file name with a known extension, optionally with
	// directories: docs/x.md, deploy/kubernetes/pod.yaml, deploy_test.go.
	barePath = regexp.MustCompile(`(?:^|[\s\x60'"(\[:,=])((?:\.{1,2}/)?(?:[A-Za-z0-9_.-]+/)*[A-Za-z0-9_-][A-Za-z0-9_.-]*\.(?:md|go|ya?ml|py|sh|mjs|json|txt|toml))\b`)
)

// refs returns the relative references in text: markdown link targets
// (without #fragments) and bare file paths. URLs, absolute paths and
// placeholders are left out.
func refs(text string) []string {
	var out []string
	for _, m := range mdLink.FindAllStringSubmatch(text, -1) {
		target, _, _ := strings.Cut(m[1], "#")
		if target == "" || strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") || strings.HasPrefix(target, "/") {
			continue
		}
		if u, err := url.PathUnescape(target); err == nil {
			target = u
		}
		out = append(out, target)
	}
	for _, m := range barePath.FindAllStringSubmatchIndex(text, -1) {
		p := text[m[2]:m[3]]
		before := text[:m[2]]
		if strings.HasPrefix(text[m[3]:], "(") {
			continue // a call in a code sample: r.json()
		}
		// Part of a URL, an absolute path or a host name (a.b.com/x.md)?
		if strings.HasSuffix(before, "/") || strings.HasSuffix(before, "://") {
			continue
		}
		if i := strings.LastIndexAny(before, " \t\n`'\"([,=:"); strings.Contains(before[i+1:], "://") {
			continue
		}
		out = append(out, p)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// external are file names the documents use for the reader's own files,
// not files of this repository.
var external = []string{
	"prometheus.yml", // the reader's Prometheus configuration
	"backtest.py",    // the reader's own backtest script
	"poller.py",      // a script name in an example of client naming
}

// exists reports whether ref, named in doc, is a file or directory:
// relative to the document's directory, or to the repository (READMEs and
// comments name paths from the top).
func exists(doc, ref string) bool {
	for _, base := range []string{path.Dir(doc), "."} {
		if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(path.Join(base, ref)))); err == nil {
			return true
		}
	}
	return false
}

func TestEveryReferencedFileExists(t *testing.T) {
	docs := documents(t)
	if !slices.Contains(docs, "docs/configuration.md") {
		t.Errorf("docs/configuration.md is missing from %v", docs)
	}
	checked := 0
	for _, doc := range docs {
		data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(doc)))
		if err != nil {
			t.Fatal(err)
		}
		all := refs(string(data))
		for _, ref := range all {
			checked++
			if slices.Contains(external, ref) {
				continue
			}
			// A bare name may stand for a path the same document names
			// in full ("bench/lib.sh ... lib.sh").
			short := !strings.Contains(ref, "/") && slices.ContainsFunc(all, func(full string) bool {
				return strings.HasSuffix(full, "/"+ref) && exists(doc, full)
			})
			if !short && !exists(doc, ref) {
				t.Errorf("%s names %s, which does not exist", doc, ref)
			}
		}
	}
	if checked < 20 {
		t.Errorf("only %d references found: the scanner is broken", checked)
	}
}

func TestRefsFindsLinksAndBarePaths(t *testing.T) {
	text := "See [the batch API](docs/batch.md#typed), [examples](examples/) and docs/sidecar.md;\n" +
		"deploy_test.go checks it. Not https://example.com/x.md, not /etc/kproxy/config.yaml,\n" +
		"not [home](https://kalshi.com). `deploy/kubernetes/pod.yaml`, (config.yaml)."
	got := refs(text)
	want := []string{"docs/batch.md", "examples/", "docs/sidecar.md", "deploy_test.go", "deploy/kubernetes/pod.yaml", "config.yaml"}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("refs = %q, want %q", got, want)
	}
}
