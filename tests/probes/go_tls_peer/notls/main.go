// A Go program without crypto/tls: l7scope's Go TLS probes must recognise it as Go and leave it alone.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Println("plain", len(os.Args))
}
