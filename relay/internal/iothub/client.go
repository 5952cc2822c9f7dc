package iothub

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// APIVersion is the service API version the client speaks.
const APIVersion = "2021-04-12"

// Authorizer supplies the Authorization header of each request.
type Authorizer interface {
	// Authorization returns the header value. It may block on the network
	// (Entra ID) within ctx.
	Authorization(ctx context.Context) (string, error)
}

// Client calls one IoT Hub's service REST API. Configure the exported fields
// before the first call; a Client is then safe for concurrent use.
type Client struct {
	// BaseURL is the API's base, https://{hub host} for Azure or the
	// emulator's URL. Required.
	BaseURL *url.URL
	// Auth authorizes requests. Required.
	Auth Authorizer
	// HTTPClient sends requests; nil means http.DefaultClient.
	HTTPClient *http.Client
	// UserAgent is sent with each request when set.
	UserAgent string
}

// MethodRequest is a direct method invocation.
type MethodRequest struct {
	MethodName string `json:"methodName"`
	// Payload is marshalled as the method's JSON payload.
	Payload any `json:"payload"`
	// ResponseTimeoutInSeconds is how long IoT Hub waits for the answer,
	// 5..300 (0 means IoT Hub's default, 30).
	ResponseTimeoutInSeconds int `json:"responseTimeoutInSeconds,omitempty"`
	// ConnectTimeoutInSeconds is how long IoT Hub waits for an offline
	// device to connect, 0..300.
	ConnectTimeoutInSeconds int `json:"connectTimeoutInSeconds"`
}

// MethodResponse is the module's answer, relayed by IoT Hub.
type MethodResponse struct {
	// Status is the module's status code.
	Status int `json:"status"`
	// Payload is the module's JSON answer.
	Payload json.RawMessage `json:"payload"`
}

// requestSlack is added to the method's own timeouts to bound the HTTP
// exchange: IoT Hub answers 504 itself once responseTimeoutInSeconds passes.
const requestSlack = 10 * time.Second

// InvokeMethod invokes a direct method on a module, or on a device when
// moduleID is empty. It returns the module's answer when IoT Hub answers
// 200, whatever the module's own status; any other answer is an [*Error].
// The call is bounded by ctx and by the request's timeouts plus 10s.
func (c *Client) InvokeMethod(ctx context.Context, deviceID, moduleID string, req MethodRequest) (*MethodResponse, error) {
	u := c.methodURL(deviceID, moduleID)
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("failed to encode method request: %w", err)
	}
	timeout := time.Duration(req.ResponseTimeoutInSeconds+req.ConnectTimeoutInSeconds)*time.Second + requestSlack
	if req.ResponseTimeoutInSeconds == 0 {
		timeout += 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	auth, err := c.Auth.Authorization(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to authorize method call: %w", err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("failed to build method request: %w", err)
	}
	hreq.Header.Set("Authorization", auth)
	hreq.Header.Set("Content-Type", "application/json; charset=utf-8")
	hreq.Header.Set("Accept", "application/json")
	if c.UserAgent != "" {
		hreq.Header.Set("User-Agent", c.UserAgent)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("failed to invoke method %s on %s: %w", req.MethodName, target(deviceID, moduleID), redactURLError(err))
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("failed to read method response from %s: %w", target(deviceID, moduleID), err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("failed to invoke method %s on %s: %w", req.MethodName, target(deviceID, moduleID), newError(resp.StatusCode, respBody))
	}
	var mr MethodResponse
	if err := json.Unmarshal(respBody, &mr); err != nil {
		return nil, fmt.Errorf("failed to decode method response from %s: %w (body %.512q)", target(deviceID, moduleID), err, respBody)
	}
	return &mr, nil
}

func (c *Client) methodURL(deviceID, moduleID string) string {
	base := strings.TrimRight(c.BaseURL.String(), "/")
	p := "/twins/" + url.PathEscape(deviceID)
	if moduleID != "" {
		p += "/modules/" + url.PathEscape(moduleID)
	}
	return base + p + "/methods?api-version=" + APIVersion
}

func target(deviceID, moduleID string) string {
	if moduleID == "" {
		return deviceID
	}
	return deviceID + "/" + moduleID
}

// redactURLError drops the request URL from transport errors; it holds no
// secret, but the message reads better without it.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// NewHTTPClient returns an HTTP client for the REST API that trusts the
// system roots plus the PEM certificates in extraCAs (may be nil) and
// honours HTTPS_PROXY/NO_PROXY.
func NewHTTPClient(extraCAs []byte) (*http.Client, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if len(extraCAs) > 0 && !pool.AppendCertsFromPEM(extraCAs) {
		return nil, errors.New("failed to add CA certificates: no PEM certificate found")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	tr.Proxy = http.ProxyFromEnvironment
	return &http.Client{Transport: tr}, nil
}
