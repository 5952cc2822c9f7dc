package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseVerify(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	exp := time.Unix(2000000000, 0)
	res := "hub.example/devices/d1/modules/m1"

	// sign builds a token by hand with a given encoding of the resource.
	sign := func(encRes string) string {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(encRes + "\n" + strconv.FormatInt(exp.Unix(), 10)))
		sig := base64.StdEncoding.EncodeToString(h.Sum(nil))
		return Prefix + "sr=" + encRes + "&sig=" + url.QueryEscape(sig) + "&se=" + strconv.FormatInt(exp.Unix(), 10)
	}
	tests := []struct {
		name    string
		token   string
		key     []byte
		wantErr bool
		wantOK  bool
	}{
		{name: "New", token: New(key, res, "", exp), key: key, wantOK: true},
		{name: "lower-case hex escapes (C SDK)", token: sign(strings.ToLower(url.QueryEscape(res))), key: key, wantOK: true},
		{name: "fields reordered", token: Prefix + reorder(New(key, res, "", exp)), key: key, wantOK: true},
		{name: "wrong key", token: New(key, res, "", exp), key: []byte("another key"), wantOK: false},
		{name: "tampered resource", token: strings.Replace(New(key, res, "", exp), "d1", "d2", 1), key: key, wantOK: false},
		{name: "no prefix", token: strings.TrimPrefix(New(key, res, "", exp), Prefix), wantErr: true},
		{name: "missing se", token: Prefix + "sr=a&sig=AAAA", wantErr: true},
		{name: "bad se", token: Prefix + "sr=a&sig=AAAA&se=soon", wantErr: true},
		{name: "bad sig", token: Prefix + "sr=a&sig=!!&se=1", wantErr: true},
		{name: "unknown field", token: Prefix + "sr=a&sig=AAAA&se=1&x=y", wantErr: true},
		{name: "duplicate field", token: Prefix + "sr=a&sr=b&sig=AAAA&se=1", wantErr: true},
		{name: "empty", token: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := Parse(tt.token)
			if tt.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("Parse error = %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := tok.Verify(tt.key); got != tt.wantOK {
				t.Errorf("Verify = %v, want %v", got, tt.wantOK)
			}
		})
	}
}

func TestParseFields(t *testing.T) {
	exp := time.Unix(1900000000, 0)
	tok, err := Parse(New([]byte("k"), "hub.example", "service", exp))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Resource != "hub.example" || tok.KeyName != "service" || !tok.Expiry.Equal(exp) {
		t.Errorf("got %+v", tok)
	}
}

func reorder(tok string) string {
	parts := strings.Split(strings.TrimPrefix(tok, Prefix), "&")
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "&")
}
