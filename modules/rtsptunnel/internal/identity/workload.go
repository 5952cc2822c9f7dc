package identity

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// workloadAPIVersion is the api-version of our workload API calls. 2019-11-05
// is the first version with both sign and trust-bundle in their current form
// and is served by every supported IoT Edge runtime (1.1 and later).
const workloadAPIVersion = "2019-11-05"

// workloadTimeout bounds one workload API call when the caller's context has
// no earlier deadline.
const workloadTimeout = 10 * time.Second

// maxWorkloadResponse bounds a workload API response body (a trust bundle is a
// few certificates).
const maxWorkloadResponse = 1 << 20

// workloadClient calls the IoT Edge workload API:
//
//	POST {base}/modules/{module}/genid/{generation}/sign?api-version=2019-11-05
//	     {"keyId":"primary","algo":"HMACSHA256","data":"<base64>"} -> 200 {"digest":"<base64>"}
//	GET  {base}/trust-bundle?api-version=2019-11-05 -> 200 {"certificate":"<PEM bundle>"}
//
// Errors are non-2xx answers with {"message":".."}.
type workloadClient struct {
	base       string       // "http://workload" for a unix socket, else the http URL; static
	http       *http.Client // static
	module     string       // static
	generation string       // static
}

// newWorkloadClient parses a workload URI: unix:///path/to/workload.sock or
// http://host:port[/prefix].
func newWorkloadClient(uri, module, generation string) (*workloadClient, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("failed to parse workload URI %q: %w", uri, err)
	}
	wc := &workloadClient{module: module, generation: generation}
	switch u.Scheme {
	case "unix":
		path := u.Path
		if u.Host != "" { // unix://relative/path, seen in hand-written env files
			path = u.Host + u.Path
		}
		if path == "" {
			return nil, fmt.Errorf("workload URI %q has no socket path", uri)
		}
		var d net.Dialer
		wc.base = "http://workload"
		wc.http = &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return d.DialContext(ctx, "unix", path)
			},
			// Calls are rare (one per connection); don't keep idle goroutines.
			DisableKeepAlives: true,
		}}
	case "http":
		if u.Host == "" {
			return nil, fmt.Errorf("workload URI %q has no host", uri)
		}
		wc.base = strings.TrimSuffix(u.Scheme+"://"+u.Host+u.Path, "/")
		wc.http = &http.Client{Transport: &http.Transport{
			DisableKeepAlives: true,
			Proxy:             nil, // the workload API is local: never through a proxy
		}}
	default:
		return nil, fmt.Errorf("workload URI %q: unsupported scheme %q (want unix or http)", uri, u.Scheme)
	}
	return wc, nil
}

// do sends one request and decodes a 2xx JSON answer into out.
func (wc *workloadClient) do(ctx context.Context, method, path string, body []byte, out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, workloadTimeout)
		defer cancel()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, wc.base+path, rd)
	if err != nil {
		return fmt.Errorf("failed to build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := wc.http.Do(req)
	if err != nil {
		return fmt.Errorf("failed to call workload API: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxWorkloadResponse))
	if err != nil {
		return fmt.Errorf("failed to read workload API response: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var e struct {
			Message string `json:"message"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &e) == nil && e.Message != "" {
			msg = e.Message
		}
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		return fmt.Errorf("workload API %s %s: %s: %s", method, strings.SplitN(path, "?", 2)[0], resp.Status, msg)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("failed to decode workload API response: %w", err)
	}
	return nil
}

// sign implements signer through the workload API.
func (wc *workloadClient) sign(ctx context.Context, data []byte) (string, error) {
	reqBody, err := json.Marshal(map[string]string{
		"keyId": "primary",
		"algo":  "HMACSHA256",
		"data":  base64.StdEncoding.EncodeToString(data),
	})
	if err != nil {
		return "", fmt.Errorf("failed to encode sign request: %w", err)
	}
	path := "/modules/" + url.PathEscape(wc.module) + "/genid/" + url.PathEscape(wc.generation) +
		"/sign?api-version=" + workloadAPIVersion
	var out struct {
		Digest string `json:"digest"`
	}
	if err := wc.do(ctx, http.MethodPost, path, reqBody, &out); err != nil {
		return "", err
	}
	if d, err := base64.StdEncoding.DecodeString(out.Digest); err != nil || len(d) == 0 {
		return "", errors.New("workload API sign: answer has no valid digest")
	}
	return out.Digest, nil
}

// trustBundle fetches and parses the trust bundle.
func (wc *workloadClient) trustBundle(ctx context.Context) (*x509.CertPool, error) {
	var out struct {
		Certificate string `json:"certificate"`
	}
	if err := wc.do(ctx, http.MethodGet, "/trust-bundle?api-version="+workloadAPIVersion, nil, &out); err != nil {
		return nil, err
	}
	pool, err := parsePEMPool([]byte(out.Certificate))
	if err != nil {
		return nil, fmt.Errorf("trust bundle: %w", err)
	}
	return pool, nil
}

// parsePEMPool parses every CERTIFICATE block of a PEM bundle into a new pool.
// A bundle without certificates, or with one that does not parse, is an error
// (x509.CertPool.AppendCertsFromPEM would skip it silently).
func parsePEMPool(b []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if err := appendPEM(pool, b); err != nil {
		return nil, err
	}
	return pool, nil
}

// appendPEM adds every certificate of a PEM bundle to pool; see parsePEMPool.
func appendPEM(pool *x509.CertPool, b []byte) error {
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		crt, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return fmt.Errorf("failed to parse certificate %d: %w", n+1, err)
		}
		pool.AddCert(crt)
		n++
	}
	if n == 0 {
		return errors.New("no PEM certificates found")
	}
	return nil
}
