package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// DefaultFile is read when no file is named and it exists.
const DefaultFile = "config.yaml"

// Sources says where settings come from besides the built-in defaults.
type Sources struct {
	// File is the -config flag; empty means not given.
	File string
	// Environ lists the environment as KEY=VALUE pairs; Getenv reads one
	// variable. With both nil the process environment is used. With only
	// Getenv set, unknown KPROXY_* variables cannot be found and go
	// unnoticed.
	Environ []string
	Getenv  func(string) string
	// Listen and Upstream are the -listen and -upstream flags; empty means
	// not given.
	Listen, Upstream string
}

// Loaded is an effective configuration and where its values came from.
type Loaded struct {
	Config *Config
	// File is the config file read; empty when there was none (built-in
	// defaults and the environment only).
	File string
	// From maps a dotted key to the variable or flag that set it
	// ("KPROXY_LISTEN", "-listen"); keys from the file or the defaults are
	// absent.
	From map[string]string
	// InFile holds the dotted keys the file set (a list, such as
	// cache.routes, as one key).
	InFile map[string]bool
}

// Name is how an error names key: with the variable or flag that set it
// when there was one ("KPROXY_LISTEN (listen)"), else the key itself.
func (l *Loaded) Name(key string) string {
	if n, ok := l.From[key]; ok {
		return varKey(n, key)
	}
	return key
}

// Source says where the value of a dotted key came from: "flag -listen",
// the variable ("KPROXY_UPSTREAM_TIMEOUT"), "file" or "default".
func (l *Loaded) Source(key string) string {
	switch n, ok := l.From[key]; {
	case ok && strings.HasPrefix(n, "-"):
		return "flag " + n
	case ok:
		return n
	case l.InFile[key]:
		return "file"
	}
	return "default"
}

// Load builds the effective configuration: defaults, then the file, then
// the environment, then flags; and validates it. A file named by -config or
// KPROXY_CONFIG must exist; the default file may be absent.
func Load(src Sources) (*Config, string, error) {
	l, err := Resolve(src)
	if err != nil {
		file := ""
		if l != nil {
			file = l.File
		}
		return nil, file, err
	}
	return l.Config, l.File, nil
}

// Resolve is Load, also reporting where each value came from. On an error
// the Loaded it returns (possibly nil) names the file involved. An error
// in a value set by a variable or a flag names it.
func Resolve(src Sources) (*Loaded, error) {
	env := environment{get: src.Getenv}
	switch {
	case src.Environ != nil:
		m := map[string]string{}
		for _, kv := range src.Environ {
			k, v, _ := strings.Cut(kv, "=")
			m[k] = v
			if strings.HasPrefix(k, EnvPrefix) && v != "" {
				env.names = append(env.names, k)
			}
		}
		if env.get == nil {
			env.get = func(k string) string { return m[k] }
		}
	case env.get == nil:
		env.get = os.Getenv
		for _, kv := range os.Environ() {
			if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, EnvPrefix) && v != "" {
				env.names = append(env.names, k)
			}
		}
	}
	cfg := Default()
	l := &Loaded{Config: cfg, From: map[string]string{}, InFile: map[string]bool{}}
	file, named := src.File, true
	if file == "" {
		file = env.get(fileVar)
	}
	if file == "" {
		file, named = DefaultFile, false
	}
	l.File = file
	data, err := os.ReadFile(file)
	switch {
	case err == nil:
		if err := decodeInto(data, cfg, l.InFile); err != nil {
			return l, err
		}
	case !named && errors.Is(err, os.ErrNotExist):
		l.File = ""
	default:
		return l, fmt.Errorf("config: %w", err)
	}
	if err := applyEnv(cfg, env, l.From); err != nil {
		return l, err
	}
	if src.Listen != "" {
		cfg.Listen, l.From["listen"] = src.Listen, "-listen"
	}
	if src.Upstream != "" {
		cfg.Upstream.URL, l.From["upstream.url"] = src.Upstream, "-upstream"
	}
	cfg.normalize()
	if err := cfg.Validate(); err != nil {
		var ke *KeyError
		if errors.As(err, &ke) {
			if n, ok := l.From[ke.Key]; ok && strings.HasPrefix(n, EnvPrefix) {
				// Show the value as typed when normalize only changed
				// its case ("LOUD", not "loud").
				if raw := env.get(n); strings.EqualFold(strings.TrimSpace(raw), ke.Value) {
					ke.Value = raw
				}
			}
			ke.Key = l.Name(ke.Key)
		}
		return l, err
	}
	return l, nil
}

// normalize puts values given in any case into the form Validate expects.
func (c *Config) normalize() {
	c.Log.Level = strings.ToLower(strings.TrimSpace(c.Log.Level))
	c.Log.Format = strings.ToLower(strings.TrimSpace(c.Log.Format))
	c.Upstream.Tier = strings.ToLower(strings.TrimSpace(c.Upstream.Tier))
	if c.Cache.Disk.Path == DiskOff {
		c.Cache.Disk.Path = ""
	}
}

// Decode reads YAML into cfg, over the values already there. Unknown keys
// and values of the wrong form are errors naming the key (dotted path) and
// the value.
func Decode(data []byte, cfg *Config) error { return decodeInto(data, cfg, nil) }

// decodeInto is Decode, recording in set (when not nil) every dotted key
// the data sets.
func decodeInto(data []byte, cfg *Config, set map[string]bool) error {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return fmt.Errorf("config: %w", err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	d := decoder{set: set, keys: knownKeys()}
	if err := d.decode(doc.Content[0], reflect.ValueOf(cfg).Elem(), ""); err != nil {
		return err
	}
	cfg.normalize()
	return nil
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// decoder walks a YAML tree into a Config.
type decoder struct {
	set  map[string]bool // keys set, or nil
	keys []string        // every known key, for suggestions
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, key string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if v.Kind() == reflect.Pointer && !v.Type().Implements(unmarshalerType) {
		if n.Tag == "!!null" {
			v.SetZero()
			return nil
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return d.decode(n, v.Elem(), key)
	}
	if v.Kind() == reflect.Struct {
		if n.Kind != yaml.MappingNode {
			return &KeyError{Key: orRoot(key), Value: n.Value, Err: errors.New("must be a mapping")}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			name := n.Content[i].Value
			sub := joinKey(key, name)
			if name == "" {
				sub = joinKey(key, `""`) // an empty (or anchored-empty) key still gets a name
			}
			f, ok := fieldByTag(v, name)
			if !ok {
				return unknownKey(sub, d.keys)
			}
			if err := d.decode(n.Content[i+1], f, sub); err != nil {
				return err
			}
		}
		return nil
	}
	if d.set != nil && !strings.HasSuffix(key, "]") && !strings.Contains(key, "].") {
		d.set[key] = true // a scalar or a whole list, outside any list
	}
	if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct {
		if n.Kind != yaml.SequenceNode {
			return &KeyError{Key: key, Value: n.Value, Err: errors.New("must be a list")}
		}
		if len(n.Content) == 0 {
			v.SetZero() // an empty list is no list: [] and nil mean the same
			return nil
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", key, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return &KeyError{Key: key, Err: errors.New("must be a single value")}
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		msg := err.Error()
		var te *yaml.TypeError
		if errors.As(err, &te) {
			msg = "wrong type, want " + v.Type().Kind().String()
		}
		return &KeyError{Key: key, Value: n.Value, Err: errors.New(strings.TrimPrefix(msg, "yaml: "))}
	}
	return nil
}

func fieldByTag(v reflect.Value, name string) (reflect.Value, bool) {
	t := v.Type()
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if tag == name {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

func joinKey(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

func orRoot(k string) string {
	if k == "" {
		return "(top level)"
	}
	return k
}

// YAML renders the effective configuration, with the values that defaults,
// the tier and upstream.url fill in written out (rates, upstream.ws_url),
// cache.overrides and cache.defaults merged into cache.routes (one line a
// route), and the admin token and any Redis password redacted. Read back,
// it configures the same kproxy.
func (c *Config) YAML() string {
	var n yaml.Node
	if err := n.Encode(c.effective()); err != nil {
		return "# cannot render: " + err.Error() + "\n"
	}
	return encodeNode(&n)
}

// YAML is Config.YAML with a trailing comment on every value saying where
// it came from: "# from flag -listen", "# from KPROXY_UPSTREAM_TIMEOUT",
// "# from file", "# default", or how a derived value was derived. It is
// still YAML that kproxy reads back to the same configuration.
func (l *Loaded) YAML() string {
	c := l.Config
	var n yaml.Node
	if err := n.Encode(c.effective()); err != nil {
		return "# cannot render: " + err.Error() + "\n"
	}
	derived := map[string]string{}
	if c.Upstream.WSURL == "" {
		derived["upstream.ws_url"] = "derived from upstream.url"
	}
	if c.Upstream.ReadRate == nil {
		derived["upstream.read_rate"] = "from upstream.tier"
	}
	if c.Upstream.WriteRate == nil {
		derived["upstream.write_rate"] = "from upstream.tier"
	}
	if l.Source("cache.disk.path") == "default" {
		if _, err := DefaultDiskPath(); err != nil {
			derived["cache.disk.path"] = "default: off, no user cache directory (" + err.Error() + ")"
		} else {
			derived["cache.disk.path"] = "default: the user cache directory + /kproxy"
		}
	}
	routes := l.Source("cache.routes")
	if routes == "default" {
		routes = "default: the built-in list"
	} else {
		routes = "from " + routes
	}
	if l.InFile["cache.overrides"] || l.InFile["cache.defaults.stale_while_revalidate"] || l.InFile["cache.defaults.stale_if_error"] ||
		l.From["cache.defaults.stale_while_revalidate"] != "" || l.From["cache.defaults.stale_if_error"] != "" {
		routes += ", with cache.defaults and cache.overrides merged in"
	}
	derived["cache.routes"] = routes
	annotate(&n, "", func(key string) string {
		if d, ok := derived[key]; ok {
			return d
		}
		if src := l.Source(key); src != "default" {
			return "from " + src
		}
		return "default"
	})
	return encodeNode(&n)
}

// annotate sets a line comment on every value under the mapping n: the
// scalars and lists, with their dotted key.
func annotate(n *yaml.Node, prefix string, comment func(key string) string) {
	if n.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := joinKey(prefix, k.Value)
		switch v.Kind {
		case yaml.MappingNode:
			annotate(v, key, comment)
		case yaml.SequenceNode:
			k.LineComment = comment(key) // the list's items follow on their lines
		default:
			v.LineComment = comment(key)
		}
	}
}

func encodeNode(n *yaml.Node) string {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	enc.Encode(n)
	enc.Close()
	return b.String()
}

// effective is the configuration as YAML shows it (see YAML).
func (c *Config) effective() *Config {
	eff := *c
	if eff.Admin.Token != "" {
		eff.Admin.Token = "(redacted)" // a secret never goes to a terminal or a log
	}
	eff.Redis.URL = redactURL(c.Redis.URL)
	read, write := c.Upstream.Rates()
	eff.Upstream.ReadRate, eff.Upstream.WriteRate = &read, &write
	if u, err := c.WSURL(); err == nil && c.Upstream.WSURL == "" {
		eff.Upstream.WSURL = u.String()
	}
	specs := c.Cache.Specs(c.Compat.LegacyFields)
	eff.Cache.Routes = make([]Route, len(specs))
	for i, s := range specs {
		swr, sie, lf := Duration(s.StaleWhileRevalidate), Duration(s.StaleIfError), s.LegacyFields
		eff.Cache.Routes[i] = Route{Pattern: s.Pattern, TTL: Duration(s.TTL), StaleWhileRevalidate: &swr, StaleIfError: &sie, LegacyFields: &lf}
	}
	eff.Cache.Overrides = nil
	return &eff
}

// MarshalYAML writes a route on one line.
func (r Route) MarshalYAML() (any, error) {
	type plain Route // without this method
	var n yaml.Node
	if err := n.Encode(plain(r)); err != nil {
		return nil, err
	}
	n.Style = yaml.FlowStyle
	return &n, nil
}
