// A local Pub/Sub server for the tests and demos: Google's in-memory fake (pstest) behind a
// gRPC port. Clients reach it with PUBSUB_EMULATOR_HOST=HOST:PORT. Topics and subscriptions
// live in memory and go with the process. With -admin-port, GET /messages on that port lists
// every message published so far with how often it was delivered and acknowledged (what a
// test needs to prove acknowledgements; the Pub/Sub API does not tell).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"cloud.google.com/go/pubsub/v2/pstest"
)

type messageState struct {
	ID         string `json:"id"`
	Topic      string `json:"topic"`
	Deliveries int    `json:"deliveries"`
	Acks       int    `json:"acks"`
}

func serveAdmin(srv *pstest.Server, address string) error {
	listener, err := net.Listen("tcp", address)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/messages", func(w http.ResponseWriter, r *http.Request) {
		states := []messageState{}
		for _, m := range srv.Messages() {
			states = append(states, messageState{ID: m.ID, Topic: m.Topic, Deliveries: m.Deliveries, Acks: m.Acks})
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(states); err != nil {
			fmt.Fprintf(os.Stderr, "pubsub emulator: /messages: %v\n", err)
		}
	})
	go func() {
		if err := http.Serve(listener, mux); err != nil {
			fmt.Fprintf(os.Stderr, "pubsub emulator: admin: %v\n", err)
		}
	}()
	return nil
}

func main() {
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Int("port", 8085, "TCP port of the Pub/Sub API (gRPC)")
	admin := flag.Int("admin-port", 0, "TCP port of GET /messages (0: none)")
	flag.Parse()
	srv := pstest.NewServerWithAddress(fmt.Sprintf("%s:%d", *host, *port))
	if *admin != 0 {
		if err := serveAdmin(srv, fmt.Sprintf("%s:%d", *host, *admin)); err != nil {
			fmt.Fprintf(os.Stderr, "pubsub emulator: admin port: %v\n", err)
			os.Exit(1)
		}
	}
	fmt.Printf("pubsub emulator (pstest) listening on %s\n", srv.Addr)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	if err := srv.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "pubsub emulator: close: %v\n", err)
		os.Exit(1)
	}
}
