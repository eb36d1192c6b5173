package deploy_test

// Small parsers the deployment checks need: Dockerfile instructions,
// .dockerignore rules, shell words, and memory quantities. They cover what
// our files use, not every corner of the formats.

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// instruction is one Dockerfile instruction after line continuations are
// joined and comments dropped.
type instruction struct {
	Line  int      // line where it starts
	Cmd   string   // upper case: FROM, RUN, COPY, ...
	Flags []string // leading --name=value flags
	Args  string   // the rest, trimmed
}

// parseDockerfile splits a Dockerfile into instructions. The escape
// character is the backslash (no escape directive is supported); comment
// lines, also inside a continuation, are dropped as Docker drops them.
func parseDockerfile(text string) ([]instruction, error) {
	var (
		out     []instruction
		cur     strings.Builder
		start   int
		pending bool
	)
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && !pending) {
			continue
		}
		if !pending {
			start = n
			cur.Reset()
		}
		cont := strings.HasSuffix(trimmed, `\`)
		if cont {
			trimmed = strings.TrimSpace(strings.TrimSuffix(trimmed, `\`))
		}
		if cur.Len() > 0 && trimmed != "" {
			cur.WriteByte(' ')
		}
		cur.WriteString(trimmed)
		pending = cont
		if cont {
			continue
		}
		in, err := splitInstruction(start, cur.String())
		if err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	if pending {
		return nil, fmt.Errorf("line %d: continuation at end of file", start)
	}
	return out, sc.Err()
}

func splitInstruction(line int, s string) (instruction, error) {
	cmd, rest, _ := strings.Cut(s, " ")
	in := instruction{Line: line, Cmd: strings.ToUpper(cmd)}
	rest = strings.TrimSpace(rest)
	for strings.HasPrefix(rest, "--") {
		flag, after, _ := strings.Cut(rest, " ")
		in.Flags = append(in.Flags, flag)
		rest = strings.TrimSpace(after)
	}
	in.Args = rest
	if in.Cmd == "" {
		return in, fmt.Errorf("line %d: empty instruction", line)
	}
	return in, nil
}

// flag returns the value of --name=value among the flags.
func (in instruction) flag(name string) (string, bool) {
	for _, f := range in.Flags {
		if v, ok := strings.CutPrefix(f, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// stage is the instructions of one FROM ... up to the next FROM.
type stage struct {
	Image string // as written after FROM
	Name  string // AS name, or ""
	Body  []instruction
}

func stages(ins []instruction) []stage {
	var out []stage
	for _, in := range ins {
		if in.Cmd == "FROM" {
			f := strings.Fields(in.Args)
			st := stage{Image: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.Name = f[2]
			}
			out = append(out, st)
			continue
		}
		if len(out) > 0 {
			out[len(out)-1].Body = append(out[len(out)-1].Body, in)
		}
	}
	return out
}

// shellWords splits a POSIX shell command line into words, honouring single
// and double quotes and backslash escapes, and expanding $NAME and ${NAME}
// through vars (an unknown name is an error, so nothing is silently empty).
// Anything more (pipes, &&, subshells) is an error: a build command is one
// simple command.
func shellWords(s string, vars map[string]string) ([]string, error) {
	var (
		words []string
		cur   strings.Builder
		in    bool // inside a word
	)
	expand := func(i int) (int, error) { // s[i] == '$'
		j := i + 1
		var name string
		if j < len(s) && s[j] == '{' {
			end := strings.IndexByte(s[j:], '}')
			if end < 0 {
				return 0, fmt.Errorf("unterminated ${ in %q", s)
			}
			name, j = s[j+1:j+end], j+end+1
		} else {
			k := j
			for k < len(s) && (s[k] == '_' || s[k] >= 'A' && s[k] <= 'Z' || s[k] >= 'a' && s[k] <= 'z' || s[k] >= '0' && s[k] <= '9') {
				k++
			}
			name, j = s[j:k], k
		}
		v, ok := vars[name]
		if !ok {
			return 0, fmt.Errorf("unknown variable %q in %q", name, s)
		}
		cur.WriteString(v)
		in = true
		return j, nil
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
			i++
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("unterminated ' in %q", s)
			}
			cur.WriteString(s[i+1 : i+1+end])
			in, i = true, i+end+2
		case c == '"':
			in = true
			i++
			for {
				if i >= len(s) {
					return nil, fmt.Errorf("unterminated \" in %q", s)
				}
				if s[i] == '"' {
					i++
					break
				}
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					cur.WriteByte(s[i+1])
					i += 2
					continue
				}
				if s[i] == '$' {
					var err error
					if i, err = expand(i); err != nil {
						return nil, err
					}
					continue
				}
				cur.WriteByte(s[i])
				i++
			}
		case c == '\\' && i+1 < len(s):
			cur.WriteByte(s[i+1])
			in, i = true, i+2
		case c == '$':
			var err error
			if i, err = expand(i); err != nil {
				return nil, err
			}
		case strings.IndexByte("|&;<>()`", c) >= 0:
			return nil, fmt.Errorf("shell operator %q in %q: keep the build a single command", c, s)
		default:
			cur.WriteByte(c)
			in = true
			i++
		}
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}

// ignoreRule is one .dockerignore line.
type ignoreRule struct {
	Pattern string
	Negate  bool
	re      *regexp.Regexp
}

// dockerignore holds .dockerignore rules with Docker's semantics: patterns
// are slash-separated paths relative to the context root, "*" and "?" do not
// cross "/", "**" matches any number of directories, a rule that matches a
// directory matches everything under it, "!" re-includes, and the last
// matching rule wins.
type dockerignore []ignoreRule

func parseDockerignore(text string) (dockerignore, error) {
	var rules dockerignore
	for line := range strings.Lines(text) {
		p := strings.TrimSpace(line)
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		r := ignoreRule{}
		if after, ok := strings.CutPrefix(p, "!"); ok {
			r.Negate, p = true, strings.TrimSpace(after)
		}
		p = strings.TrimPrefix(filepath.ToSlash(filepath.Clean(p)), "/")
		r.Pattern = p
		re, err := globRegexp(p)
		if err != nil {
			return nil, fmt.Errorf(".dockerignore %q: %w", p, err)
		}
		r.re = re
		rules = append(rules, r)
	}
	return rules, nil
}

func globRegexp(p string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '*':
			if i+1 < len(p) && p[i+1] == '*' {
				i++
				if i+1 < len(p) && p[i+1] == '/' {
					i++
					b.WriteString("(.*/)?") // "**/": zero or more directories
				} else {
					b.WriteString(".*")
				}
				continue
			}
			b.WriteString("[^/]*")
		case '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

// Excluded reports whether the context-relative, slash-separated path is
// left out of the build context.
func (d dockerignore) Excluded(path string) bool {
	excluded := false
	for _, r := range d {
		if r.matchesOrParent(path) {
			excluded = !r.Negate
		}
	}
	return excluded
}

func (r ignoreRule) matchesOrParent(path string) bool {
	for p := path; p != "." && p != ""; p = filepath.ToSlash(filepath.Dir(p)) {
		if r.re.MatchString(p) {
			return true
		}
	}
	return false
}

func (d dockerignore) hasNegations() bool {
	for _, r := range d {
		if r.Negate {
			return true
		}
	}
	return false
}

// copyContext copies the regular files of root that the rules keep into dst,
// the way `docker build` sends its context.
func copyContext(root, dst string, rules dockerignore) (files int, err error) {
	prune := !rules.hasNegations()
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if prune && rules.Excluded(rel) {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || rules.Excluded(rel) {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		target := filepath.Join(dst, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		files++
		return os.WriteFile(target, data, info.Mode().Perm())
	})
	return files, err
}

// quantity parses a Kubernetes memory quantity ("384Mi", "1Gi", "500M",
// "1.5Gi", "402653184") into bytes.
func quantity(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{
		{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
		{"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
	}
	mult := 1.0
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = v, u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("not a memory quantity: %q", s)
	}
	return int64(n * mult), nil
}

// dockerBytes parses a Docker/Compose byte value ("384m", "1g", "512MiB" is
// not accepted by Compose; units are powers of 1024, b|k|m|g, any case).
func dockerBytes(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "b")
	mult := int64(1)
	switch {
	case strings.HasSuffix(t, "k"):
		mult, t = 1<<10, strings.TrimSuffix(t, "k")
	case strings.HasSuffix(t, "m"):
		mult, t = 1<<20, strings.TrimSuffix(t, "m")
	case strings.HasSuffix(t, "g"):
		mult, t = 1<<30, strings.TrimSuffix(t, "g")
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("not a byte value: %q", s)
	}
	return n * mult, nil
}
