// Command traffic drives the shop demo with a little mixed traffic so that
// traces show up in SkyWalking: successes, a 404, an order and a 500.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

type call struct {
	method, path, body string
}

var round = []call{
	{http.MethodGet, "/health", ""},
	{http.MethodGet, "/api/products", ""},
	{http.MethodGet, "/api/products/1", ""},
	{http.MethodGet, "/api/products/999", ""},
	{http.MethodPost, "/api/orders", `{"product_id":3,"quantity":1,"customer":"ada"}`},
	{http.MethodGet, "/api/checkout/fail", ""},
}

func main() {
	base := flag.String("url", "http://127.0.0.1:8080", "shop base URL")
	n := flag.Int("n", 20, "number of rounds (0 = run until interrupted)")
	interval := flag.Duration("interval", 200*time.Millisecond, "pause between rounds")
	flag.Parse()

	client := &http.Client{Timeout: 10 * time.Second}
	b := strings.TrimRight(*base, "/")
	failures := 0
	for i := 0; *n == 0 || i < *n; i++ {
		if i > 0 {
			time.Sleep(*interval)
		}
		for _, c := range round {
			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
			}
			req, err := http.NewRequest(c.method, b+c.path, body)
			if err != nil {
				fmt.Fprintf(os.Stderr, "traffic: %v\n", err)
				os.Exit(2)
			}
			if c.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			start := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				failures++
				fmt.Printf("%s %s -> error: %v\n", c.method, c.path, err)
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			el := time.Since(start)
			fmt.Printf("%s %s -> %d (%.1fms)\n", c.method, c.path, resp.StatusCode, float64(el.Microseconds())/1000)
		}
	}
	if failures > 0 {
		fmt.Fprintf(os.Stderr, "traffic: %d requests failed to connect\n", failures)
		os.Exit(1)
	}
}
