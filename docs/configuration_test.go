package docs_test

import (
	"os"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/internal/config"
)

// TestConfigurationReferenceNamesEveryKey keeps docs/configuration.md's
// table in step with the Config struct: a new key fails here until it is
// documented.
func TestConfigurationReferenceNamesEveryKey(t *testing.T) {
	data, err := os.ReadFile("configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for _, v := range config.Vars() {
		if !strings.Contains(doc, "| `"+v.Key+"` |") {
			t.Errorf("docs/configuration.md has no row for %s (%s)", v.Key, v.Name)
		}
	}
	for _, key := range []string{"cache.routes", "cache.overrides"} {
		if !strings.Contains(doc, "| `"+key+"` |") {
			t.Errorf("docs/configuration.md has no row for %s", key)
		}
	}
}
