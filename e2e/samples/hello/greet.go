package main

import "fmt"

// Greeting is the whole business logic of this sample service.
func Greeting(name, version string) string {
	if name == "" {
		name = "world"
	}
	if version == "" {
		version = "dev"
	}
	return fmt.Sprintf("hello, %s (version %s)", name, version)
}
