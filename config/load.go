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
	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
	// Listen and Upstream are the -listen and -upstream flags; empty means
	// not given.
	Listen, Upstream string
}

// Load builds the effective configuration: defaults, then the file, then
// the environment, then flags; and validates it. A file named by -config or
// KPROXY_CONFIG must exist; the default file may be absent.
func Load(src Sources) (*Config, string, error) {
	getenv := src.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	cfg := Default()
	file, named := src.File, true
	if file == "" {
		file = getenv("KPROXY_CONFIG")
	}
	if file == "" {
		file, named = DefaultFile, false
	}
	data, err := os.ReadFile(file)
	switch {
	case err == nil:
		if err := Decode(data, cfg); err != nil {
			return nil, file, err
		}
	case !named && errors.Is(err, os.ErrNotExist):
		file = ""
	default:
		return nil, file, fmt.Errorf("config: %w", err)
	}
	env := []struct {
		name string
		dst  *string
	}{
		{"KPROXY_LISTEN", &cfg.Listen},
		{"KPROXY_UPSTREAM", &cfg.Upstream.URL},
		{"KPROXY_ADMIN_TOKEN", &cfg.Admin.Token},
		{"KPROXY_LOG_LEVEL", &cfg.Log.Level},
		{"KPROXY_LOG_FORMAT", &cfg.Log.Format},
		{"KPROXY_REDIS_URL", &cfg.Redis.URL},
	}
	for _, e := range env {
		if v := getenv(e.name); v != "" {
			*e.dst = v
		}
	}
	if src.Listen != "" {
		cfg.Listen = src.Listen
	}
	if src.Upstream != "" {
		cfg.Upstream.URL = src.Upstream
	}
	if err := cfg.Validate(); err != nil {
		return nil, file, err
	}
	return cfg, file, nil
}

// Decode reads YAML into cfg, over the values already there. Unknown keys
// and values of the wrong form are errors naming the key (dotted path) and
// the value.
func Decode(data []byte, cfg *Config) error {
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
	return decode(doc.Content[0], reflect.ValueOf(cfg).Elem(), "")
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func decode(n *yaml.Node, v reflect.Value, key string) error {
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
		return decode(n, v.Elem(), key)
	}
	if v.Kind() == reflect.Struct {
		if n.Kind != yaml.MappingNode {
			return &KeyError{Key: orRoot(key), Value: n.Value, Err: errors.New("must be a mapping")}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			name := n.Content[i].Value
			sub := joinKey(key, name)
			f, ok := fieldByTag(v, name)
			if !ok {
				return &KeyError{Key: sub, Err: errors.New("unknown key")}
			}
			if err := decode(n.Content[i+1], f, sub); err != nil {
				return err
			}
		}
		return nil
	}
	if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct {
		if n.Kind != yaml.SequenceNode {
			return &KeyError{Key: key, Value: n.Value, Err: errors.New("must be a list")}
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := decode(item, s.Index(i), fmt.Sprintf("%s[%d]", key, i)); err != nil {
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

// YAML renders the effective configuration, with the values that defaults
// and the tier fill in written out, and the admin token redacted.
func (c *Config) YAML() string {
	eff := *c
	if eff.Admin.Token != "" {
		eff.Admin.Token = "(redacted)" // a secret never goes to a terminal or a log
	}
	read, write := c.Upstream.Rates()
	eff.Upstream.ReadRate, eff.Upstream.WriteRate = &read, &write
	eff.Cache.Routes = make([]Route, len(c.Cache.Routes))
	for i, s := range c.Cache.Specs(c.Compat.LegacyFields) {
		swr, sie := Duration(s.StaleWhileRevalidate), Duration(s.StaleIfError)
		eff.Cache.Routes[i] = Route{Pattern: s.Pattern, TTL: Duration(s.TTL), StaleWhileRevalidate: &swr, StaleIfError: &sie}
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	enc.Encode(&eff)
	enc.Close()
	return b.String()
}
