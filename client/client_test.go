package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/kproxy/kproxy/client"
)

// server returns a client of a server answering every request with handler.
func server(t *testing.T, handler http.HandlerFunc) *client.Client {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return client.New(srv.URL+"/", srv.Client())
}

func TestBatchSendsTheContractBody(t *testing.T) {
	var got map[string]any
	var header http.Header
	c := server(t, func(w http.ResponseWriter, r *http.Request) {
		header = r.Header.Clone()
		if r.Method != http.MethodPost || r.URL.Path != "/batch" {
			t.Errorf("request = %s %s, want POST /batch", r.Method, r.URL.Path)
		}
		json.NewDecoder(r.Body).Decode(&got)
		io.WriteString(w, `{"responses":[{"id":"m1","status":200,"cache":"HIT","body":{"markets":[]}}]}`)
	})
	c.Header = http.Header{"Authorization": {"Bearer t"}}
	resp, err := c.Batch(context.Background(), []client.Item{{ID: "m1", Path: "/trade-api/v2/markets"}})
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	want := map[string]any{"requests": []any{map[string]any{"id": "m1", "path": "/trade-api/v2/markets"}}}
	if g, w := mustJSON(t, got), mustJSON(t, want); g != w {
		t.Errorf("request body = %s, want %s", g, w)
	}
	if h := header.Get("Authorization"); h != "Bearer t" {
		t.Errorf("Authorization = %q, want the client's Header", h)
	}
	if r := resp.Responses[0]; r.ID != "m1" || r.Status != 200 || r.Cache != "HIT" || string(r.Body) != `{"markets":[]}` || !r.OK() {
		t.Errorf("response = %+v, want m1 200 HIT with the raw body", r)
	}
}

func TestBatchAllPagesIsSentAndPagesRead(t *testing.T) {
	var got map[string]any
	c := server(t, func(w http.ResponseWriter, r *http.Request) {
		json.NewDecoder(r.Body).Decode(&got)
		io.WriteString(w, `{"responses":[{"id":"t","status":200,"cache":"MISS","pages":2,"next_cursor":"c2",`+
			`"body":{"trades":[{"trade_id":"a"},{"trade_id":"b"}],"cursor":"c2","pages":2,"truncated":true}},`+
			`{"id":"s","status":200,"body":{"series":{}}}]}`)
	})
	resp, err := c.Batch(context.Background(), []client.Item{
		{ID: "t", Path: "/trade-api/v2/markets/trades?ticker=X&limit=1", AllPages: true},
		{ID: "s", Path: "/trade-api/v2/series/X"},
	})
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	want := map[string]any{"requests": []any{
		map[string]any{"id": "t", "path": "/trade-api/v2/markets/trades?ticker=X&limit=1", "all_pages": true},
		map[string]any{"id": "s", "path": "/trade-api/v2/series/X"}, // all_pages false: left out
	}}
	if g, w := mustJSON(t, got), mustJSON(t, want); g != w {
		t.Errorf("request body = %s, want %s", g, w)
	}
	if r := resp.Responses[0]; r.Pages != 2 || r.NextCursor != "c2" {
		t.Errorf("response pages %d next_cursor %q, want 2 and c2", r.Pages, r.NextCursor)
	}
	if r := resp.Responses[1]; r.Pages != 0 || r.NextCursor != "" {
		t.Errorf("plain item: pages %d next_cursor %q, want none", r.Pages, r.NextCursor)
	}
}

func TestMarketsOmitsZeroOptions(t *testing.T) {
	var got map[string]any
	c := server(t, func(w http.ResponseWriter, r *http.Request) {
		json.NewDecoder(r.Body).Decode(&got)
		io.WriteString(w, `{"markets_by_series":{"A":[{"ticker":"A-1"}]},"errors":{"B":{"status":404,"error":"not found"}}}`)
	})
	resp, err := c.Markets(context.Background(), client.MarketsRequest{SeriesTickers: []string{"A", "B"}})
	if err != nil {
		t.Fatalf("Markets: %v", err)
	}
	if _, ok := got["limit"]; ok || len(got) != 1 {
		t.Errorf("request body = %v, want only series_tickers (server defaults for the rest)", got)
	}
	if len(resp.MarketsBySeries["A"]) != 1 || resp.Errors["B"].Status != 404 {
		t.Errorf("response = %+v, want one market for A and a 404 for B", resp)
	}
}

func TestRefusalIsAnError(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   client.Error
	}{
		{"kproxy JSON error", 413, `{"error":"too many","code":"too_many_items"}`, client.Error{Status: 413, Code: "too_many_items", Message: "too many"}},
		{"other body", 502, "bad gateway\n", client.Error{Status: 502, Message: "bad gateway"}},
		{"empty body", 503, "", client.Error{Status: 503, Message: "Service Unavailable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := server(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			_, err := c.Series(context.Background(), client.SeriesRequest{SeriesTickers: []string{"A"}})
			var ce *client.Error
			if !errors.As(err, &ce) || *ce != tt.want {
				t.Errorf("err = %v, want %+v", err, tt.want)
			}
		})
	}
}

func TestStreamDeliversLinesThenDone(t *testing.T) {
	c := server(t, func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get("Accept"); a != "application/x-ndjson" {
			t.Errorf("Accept = %q, want application/x-ndjson", a)
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		io.WriteString(w, `{"id":"A","status":200,"cache":"MISS","body":[1,2]}`+"\n")
		io.WriteString(w, `{"id":"B","status":404,"error":"not found"}`+"\n")
		io.WriteString(w, `{"done":true,"ok":1,"failed":1,"elapsed_ms":7}`+"\n")
	})
	var ids []string
	done, err := c.Stream(context.Background(), client.PathMarkets, client.MarketsRequest{SeriesTickers: []string{"A", "B"}}, func(l client.Line) error {
		ids = append(ids, l.ID)
		return nil
	})
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if want := []string{"A", "B"}; !slices.Equal(ids, want) {
		t.Errorf("lines = %v, want %v", ids, want)
	}
	if want := (client.Done{Done: true, OK: 1, Failed: 1, ElapsedMS: 7}); *done != want {
		t.Errorf("done = %+v, want %+v", *done, want)
	}
}

func TestStreamWithoutDoneLineIsAnError(t *testing.T) {
	c := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		io.WriteString(w, `{"id":"A","status":200}`+"\n")
	})
	_, err := c.Stream(context.Background(), client.PathSeries, client.SeriesRequest{SeriesTickers: []string{"A"}}, func(client.Line) error { return nil })
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("err = %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestStreamStopsWhenCallbackFails(t *testing.T) {
	c := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		io.WriteString(w, `{"id":"A","status":200}`+"\n"+`{"id":"B","status":200}`+"\n")
	})
	stop := errors.New("stop")
	calls := 0
	_, err := c.Stream(context.Background(), client.PathBatch, client.BatchRequest{}, func(client.Line) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("err = %v after %d calls, want stop after 1", err, calls)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
