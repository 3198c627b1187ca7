// hello prints a greeting: `hello [name]`. APP_VERSION comes from the image's final stage.
package main

import (
	"fmt"
	"os"
)

func main() {
	name := ""
	if len(os.Args) > 1 {
		name = os.Args[1]
	}
	fmt.Println(Greeting(name, os.Getenv("APP_VERSION")))
}
