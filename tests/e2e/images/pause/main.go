// pause: the sandbox process of the e2e pods. Sleeps until told to stop, like
// Kubernetes' pause image, and reaps nothing else.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
	<-c
}
