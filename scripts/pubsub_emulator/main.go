// A local Pub/Sub server for the tests and demos: Google's in-memory fake (pstest) behind a
// gRPC port. Clients reach it with PUBSUB_EMULATOR_HOST=127.0.0.1:PORT. Topics and
// subscriptions live in memory and go with the process.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"cloud.google.com/go/pubsub/v2/pstest"
)

func main() {
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Int("port", 8085, "TCP port")
	flag.Parse()
	srv := pstest.NewServerWithAddress(fmt.Sprintf("%s:%d", *host, *port))
	fmt.Printf("pubsub emulator (pstest) listening on %s\n", srv.Addr)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	if err := srv.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "pubsub emulator: close: %v\n", err)
		os.Exit(1)
	}
}
