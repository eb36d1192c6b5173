package config

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// EnvPrefix starts every environment variable kproxy reads.
const EnvPrefix = "KPROXY_"

// Var is one environment variable that sets a configuration key.
type Var struct {
	// Name is the variable: EnvPrefix + the dotted key in upper case with
	// "_" for ".", e.g. KPROXY_UPSTREAM_TIMEOUT for upstream.timeout.
	Name string
	// Key is the dotted configuration key it sets.
	Key string
	// Default is the built-in value, as it is written in config.yaml; ""
	// for an empty string or an unset optional value.
	Default string
	// Kind says what the value is: duration, size, integer, number,
	// true|false or text.
	Kind string
}

// aliases are the short names kept from before every key had a variable.
var aliases = map[string]string{"KPROXY_UPSTREAM": "upstream.url"}

// ignoredVars are KPROXY_* names that kproxy's own examples and manifests
// give to the scripts that call kproxy (where to reach it), not to kproxy.
// They are accepted and ignored so that a shell prepared for the examples
// can still start kproxy.
var ignoredVars = []string{"KPROXY_URL"}

// fileVar names the config file; it is read before the file.
const fileVar = "KPROXY_CONFIG"

// Vars lists every environment variable that sets a scalar key, in the
// order of the keys in Config, derived from the struct's yaml tags. Lists
// (cache.routes, cache.overrides) have no variable: set them in the file.
func Vars() []Var {
	var out []Var
	walkScalars(reflect.ValueOf(Default()).Elem(), "", func(key string, v reflect.Value) {
		out = append(out, Var{Name: envName(key), Key: key, Default: scalarString(v), Kind: kindOf(v.Type())})
	})
	return out
}

func envName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// walkScalars calls fn for every scalar field under v (a struct), with its
// dotted key. Slices and maps are skipped.
func walkScalars(v reflect.Value, prefix string, fn func(key string, v reflect.Value)) {
	eachField(v.Type(), prefix, func(i int, f reflect.StructField, key string) {
		switch fv := v.Field(i); {
		case isScalar(f.Type):
			fn(key, fv)
		case f.Type.Kind() == reflect.Struct:
			walkScalars(fv, key, fn)
		}
	})
}

// eachField calls fn for every field of the struct type t that YAML names,
// with its index and dotted key under prefix.
func eachField(t reflect.Type, prefix string, fn func(i int, f reflect.StructField, key string)) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		fn(i, f, joinKey(prefix, tag))
	}
}

// isScalar reports whether t is set by one value: a basic kind, a type
// with its own YAML decoding (Duration, Size), or a pointer to either.
func isScalar(t reflect.Type) bool {
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return true
	}
	if t.Kind() == reflect.Pointer {
		return isScalar(t.Elem())
	}
	switch t.Kind() {
	case reflect.String, reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

func kindOf(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t {
	case reflect.TypeFor[Duration]():
		return "duration"
	case reflect.TypeFor[Size]():
		return "size"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true|false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	}
	return "text"
}

// scalarString writes a scalar the way config.yaml spells it.
func scalarString(v reflect.Value) string {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return ""
		}
		v = v.Elem()
	}
	if s, ok := v.Interface().(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprint(v.Interface())
}

// setScalar parses s into v (a scalar field), the way the file's value
// would be read.
func setScalar(v reflect.Value, s string) error {
	if v.Kind() == reflect.Pointer {
		p := reflect.New(v.Type().Elem())
		if err := setScalar(p.Elem(), s); err != nil {
			return err
		}
		v.Set(p)
		return nil
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
		return v.Addr().Interface().(yaml.Unmarshaler).UnmarshalYAML(n)
	}
	s = strings.TrimSpace(s)
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return errors.New("not true or false")
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, v.Type().Bits())
		if err != nil {
			return errors.New("not an integer")
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(s, 10, v.Type().Bits())
		if err != nil {
			return errors.New("not a whole number")
		}
		v.SetUint(n)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(s, v.Type().Bits())
		if err != nil {
			return errors.New("not a number")
		}
		v.SetFloat(f)
	default:
		return fmt.Errorf("cannot be set from the environment (%s)", v.Kind())
	}
	return nil
}

// environment is where Load reads variables from.
type environment struct {
	get func(string) string
	// names lists the KPROXY_* variables that are set; nil when the
	// source cannot be listed (then unknown names go unnoticed).
	names []string
}

// applyEnv sets every key whose variable is set (non-empty) and records in
// from which variable set which key. An unknown KPROXY_* variable, or one
// that cannot be parsed, is an error naming it.
func applyEnv(cfg *Config, env environment, from map[string]string) error {
	known := map[string]bool{fileVar: true}
	for _, n := range ignoredVars {
		known[n] = true
	}
	root := reflect.ValueOf(cfg).Elem()
	var firstErr error
	set := func(name, key string, v reflect.Value) {
		known[name] = true
		raw := env.get(name)
		if raw == "" || firstErr != nil {
			return
		}
		if prev, ok := from[key]; ok {
			firstErr = &KeyError{Key: name, Err: fmt.Errorf("%s sets %s too: set only one", prev, key)}
			return
		}
		if err := setScalar(v, raw); err != nil {
			// Only strings hold secrets (admin.token, redis.url), and
			// setting a string cannot fail: the value is safe to show.
			firstErr = &KeyError{Key: varKey(name, key), Value: raw, Err: err}
			return
		}
		from[key] = name
	}
	for name, key := range aliases {
		set(name, key, fieldByKey(root, key))
	}
	walkScalars(root, "", func(key string, v reflect.Value) { set(envName(key), key, v) })
	if firstErr != nil {
		return firstErr
	}
	names := slices.Clone(env.names)
	slices.Sort(names)
	for _, n := range names {
		if !known[n] {
			return unknownVar(n, slices.Sorted(maps.Keys(known)))
		}
	}
	return nil
}

// varKey is how an error names a key set by a variable.
func varKey(name, key string) string { return name + " (" + key + ")" }

// fieldByKey returns the field of a dotted key under root.
func fieldByKey(root reflect.Value, key string) reflect.Value {
	v := root
	for part := range strings.SplitSeq(key, ".") {
		v, _ = fieldByTag(v, part)
	}
	return v
}
