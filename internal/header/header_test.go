package header

import (
	"slices"
	"testing"
)

func TestNext(t *testing.T) {
	tests := []struct {
		name, in, sep string
		want          [][2]string
	}{
		{"plain list", "no-cache, max-age=0", "=", [][2]string{{"no-cache", ""}, {"max-age", "0"}}},
		{"parameters", "gzip;q=0 , *;q=1", ";", [][2]string{{"gzip", "q=0 "}, {"*", "q=1"}}},
		{"empty members", " ,a,,", "=", [][2]string{{"", ""}, {"a", ""}, {"", ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got [][2]string
			for v := tt.in; v != ""; {
				var name, arg string
				name, arg, v = Next(v, tt.sep)
				got = append(got, [2]string{name, arg})
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Next walk of %q = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestForwardedFor(t *testing.T) {
	tests := []struct {
		name  string
		prior []string
		addr  string
		want  string
	}{
		{"first hop", nil, "10.0.0.1:5000", "10.0.0.1"},
		{"appended to prior hops", []string{"1.1.1.1", "2.2.2.2, 3.3.3.3"}, "[::1]:80", "1.1.1.1, 2.2.2.2, 3.3.3.3, ::1"},
		{"address without port", nil, "pipe", "pipe"},
	}
	for _, tt := range tests {
		if got := ForwardedFor(tt.prior, tt.addr); len(got) != 1 || got[0] != tt.want {
			t.Errorf("%s: ForwardedFor(%q, %q) = %q, want %q", tt.name, tt.prior, tt.addr, got, tt.want)
		}
	}
}

func TestSetHoldsHopByHop(t *testing.T) {
	s := Set("x-extra")
	for _, k := range append(slices.Clone(HopByHop), "X-Extra") {
		if !s[k] {
			t.Errorf("Set lacks %s", k)
		}
	}
	if s["Authorization"] {
		t.Error("Set holds Authorization, which is end-to-end")
	}
}
