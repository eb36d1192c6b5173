package status

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/json"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/kproxy/kproxy/internal/httperr"
)

// web holds the page: one HTML file into which the style sheet and the
// script are inlined at startup, so the page is a single request.
//
//go:embed web/index.html web/status.css web/status.js
var web embed.FS

// page is the assembled page and its Content-Security-Policy, which
// allows exactly the inlined style and script (by hash) and fetches to
// kproxy itself: the browser refuses anything else, so the page cannot
// reach a CDN or a font server even by mistake.
type page struct {
	html []byte
	csp  string
}

func buildPage() (page, error) {
	html, err := web.ReadFile("web/index.html")
	if err != nil {
		return page{}, err
	}
	css, err := web.ReadFile("web/status.css")
	if err != nil {
		return page{}, err
	}
	js, err := web.ReadFile("web/status.js")
	if err != nil {
		return page{}, err
	}
	html = bytes.Replace(html, []byte("/*STYLE*/"), css, 1)
	html = bytes.Replace(html, []byte("/*SCRIPT*/"), js, 1)
	hash := func(b []byte) string {
		sum := sha256.Sum256(b)
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	csp := "default-src 'none'; style-src " + hash(css) + "; script-src " + hash(js) +
		"; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	return page{html: html, csp: csp}, nil
}

// Register adds GET /status and GET /status.json with add, typically
// (*proxy.Server).Handle.
func (c *Collector) Register(add func(method, path string, h echo.HandlerFunc)) {
	add(http.MethodGet, "/status", c.handlePage)
	add(http.MethodGet, "/status.json", c.handleJSON)
}

func (c *Collector) handlePage(ec echo.Context) error {
	h := ec.Response().Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Security-Policy", c.page.csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	ec.Response().WriteHeader(http.StatusOK)
	_, err := ec.Response().Write(c.page.html)
	return err
}

func (c *Collector) handleJSON(ec echo.Context) error {
	body, err := json.Marshal(c.Report())
	if err != nil {
		httperr.Write(ec.Response(), http.StatusInternalServerError, httperr.CodeStatusFailed, "building the status report failed", 0)
		return nil
	}
	h := ec.Response().Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	ec.Response().WriteHeader(http.StatusOK)
	_, err = ec.Response().Write(body)
	return err
}
