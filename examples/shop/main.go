// Command shop is a small demo web service: the kind of Go service people
// write on day one. It uses only the standard library and has no tracing
// import at all; skyhook traces it from outside with eBPF uprobes.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type Product struct {
	ID    int    `json:"id"`
	Name  string `json:"name"`
	Price int    `json:"price_cents"`
	Stock int    `json:"stock"`
}

type OrderRequest struct {
	ProductID int    `json:"product_id"`
	Quantity  int    `json:"quantity"`
	Customer  string `json:"customer"`
}

type Order struct {
	ID        int    `json:"id"`
	ProductID int    `json:"product_id"`
	Quantity  int    `json:"quantity"`
	Customer  string `json:"customer"`
	Total     int    `json:"total_cents"`
	Status    string `json:"status"`
}

type store struct {
	mu       sync.Mutex
	products []Product
	orders   []Order
}

func newStore() *store {
	return &store{products: []Product{
		{ID: 1, Name: "Gopher plush", Price: 1999, Stock: 42},
		{ID: 2, Name: "Coffee mug", Price: 1250, Stock: 100},
		{ID: 3, Name: "Sticker pack", Price: 499, Stock: 100000},
		{ID: 4, Name: "Hoodie", Price: 4900, Stock: 12},
	}}
}

func (s *store) product(id int) (Product, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.products {
		if p.ID == id {
			return p, true
		}
	}
	return Product{}, false
}

func (s *store) list() []Product {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Product(nil), s.products...)
}

func (s *store) placeOrder(req OrderRequest) (Order, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.products {
		p := &s.products[i]
		if p.ID != req.ProductID {
			continue
		}
		if p.Stock < req.Quantity {
			return Order{}, errors.New("not enough stock")
		}
		p.Stock -= req.Quantity
		o := Order{
			ID:        len(s.orders) + 1,
			ProductID: p.ID,
			Quantity:  req.Quantity,
			Customer:  req.Customer,
			Total:     p.Price * req.Quantity,
			Status:    "confirmed",
		}
		s.orders = append(s.orders, o)
		return o, nil
	}
	return Order{}, errors.New("product not found")
}

func writeJSON(w http.ResponseWriter, status int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		log.Printf("write response: %v", err)
	}
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func methodIs(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method)
	writeError(w, http.StatusMethodNotAllowed, "method not allowed")
	return false
}

type server struct {
	store *store
}

func (s *server) health(w http.ResponseWriter, r *http.Request) {
	if !methodIs(w, r, http.MethodGet) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "up"})
}

func (s *server) products(w http.ResponseWriter, r *http.Request) {
	if !methodIs(w, r, http.MethodGet) {
		return
	}
	writeJSON(w, http.StatusOK, s.store.list())
}

// product serves /api/products/{id}.
func (s *server) product(w http.ResponseWriter, r *http.Request) {
	if !methodIs(w, r, http.MethodGet) {
		return
	}
	idStr := strings.TrimPrefix(r.URL.Path, "/api/products/")
	id, err := strconv.Atoi(idStr)
	if err != nil || strings.Contains(idStr, "/") {
		writeError(w, http.StatusNotFound, "product not found")
		return
	}
	p, ok := s.store.product(id)
	if !ok {
		writeError(w, http.StatusNotFound, "product not found")
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *server) orders(w http.ResponseWriter, r *http.Request) {
	if !methodIs(w, r, http.MethodPost) {
		return
	}
	var req OrderRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON: "+err.Error())
		return
	}
	switch {
	case req.ProductID <= 0:
		writeError(w, http.StatusBadRequest, "product_id is required")
		return
	case req.Quantity <= 0:
		writeError(w, http.StatusBadRequest, "quantity must be positive")
		return
	case strings.TrimSpace(req.Customer) == "":
		writeError(w, http.StatusBadRequest, "customer is required")
		return
	}
	o, err := s.store.placeOrder(req)
	if err != nil {
		status := http.StatusConflict
		if err.Error() == "product not found" {
			status = http.StatusNotFound
		}
		writeError(w, status, err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, o)
}

// checkoutFail simulates a downstream payment provider outage: the error
// path every demo needs.
func (s *server) checkoutFail(w http.ResponseWriter, r *http.Request) {
	if !methodIs(w, r, http.MethodGet) {
		return
	}
	time.Sleep(15 * time.Millisecond) // the provider times out slowly
	writeError(w, http.StatusInternalServerError, "payment provider unavailable")
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		log.Printf("%s %s -> %d (%s)", r.Method, r.URL.Path, rec.status, time.Since(start).Round(time.Microsecond))
	})
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()

	s := &server{store: newStore()}
	mux := http.NewServeMux()
	mux.HandleFunc("/health", s.health)
	mux.HandleFunc("/api/products", s.products)
	mux.HandleFunc("/api/products/", s.product)
	mux.HandleFunc("/api/orders", s.orders)
	mux.HandleFunc("/api/checkout/fail", s.checkoutFail)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	srv := &http.Server{
		Handler:           logRequests(mux),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	fmt.Printf("shop listening on %s\n", ln.Addr())

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	select {
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Fatalf("serve: %v", err)
		}
	case sig := <-sigc:
		log.Printf("received %v, shutting down", sig)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			log.Printf("shutdown: %v", err)
		}
	}
}
