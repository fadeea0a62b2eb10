// Command fakecloud runs local stand-ins for the cloud side of edgegate's uplinks, for
// measurements (scripts/sink-cost.sh): Google's pstest Pub/Sub fake with one topic, and an
// HTTP collector that answers 204 to every POST; GET /count tells what arrived. It never
// leaves the loopback interface.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
)

func main() {
	httpAddr := flag.String("http", "127.0.0.1:18080", "address of the HTTP collector")
	psPort := flag.Int("pubsub-port", 18085, "loopback port of the Pub/Sub fake")
	topic := flag.String("topic", "projects/proj/topics/edgegate-records", "topic to create")
	flag.Parse()

	ps := pstest.NewServerWithAddress(fmt.Sprintf("127.0.0.1:%d", *psPort))
	defer ps.Close()
	if _, err := ps.GServer.CreateTopic(context.Background(), &pubsubpb.Topic{Name: *topic}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var posts atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/count" {
			// What arrived so far: HTTP batches and Pub/Sub messages.
			fmt.Fprintf(w, "http %d pubsub %d\n", posts.Load(), len(ps.Messages()))
			return
		}
		io.Copy(io.Discard, r.Body)
		posts.Add(1)
		w.WriteHeader(http.StatusNoContent)
	})}
	go srv.Serve(ln)
	fmt.Printf("pubsub %s http %s\n", ps.Addr, ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	srv.Close()
}
