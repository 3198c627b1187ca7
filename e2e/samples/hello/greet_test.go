package main

import "testing"

func TestGreeting(t *testing.T) {
	cases := []struct{ name, version, want string }{
		{"shop", "1.0.0", "hello, shop (version 1.0.0)"},
		{"", "1.0.0", "hello, world (version 1.0.0)"},
		{"shop", "", "hello, shop (version dev)"},
	}
	for _, c := range cases {
		if got := Greeting(c.name, c.version); got != c.want {
			t.Errorf("Greeting(%q, %q) = %q, want %q", c.name, c.version, got, c.want)
		}
	}
}
