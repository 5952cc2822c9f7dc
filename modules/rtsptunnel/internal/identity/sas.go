package identity

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// stringToSign returns what a SAS signature covers:
// urlencode(resource) + "\n" + expiry in Unix seconds.
func stringToSign(resource string, expiry time.Time) string {
	return url.QueryEscape(resource) + "\n" + strconv.FormatInt(expiry.Unix(), 10)
}

// buildToken signs resource until expiry with s and formats the token as
// "SharedAccessSignature sr=<urlencoded resource>&sig=<urlencoded signature>&se=<expiry>".
func buildToken(ctx context.Context, s signer, resource string, expiry time.Time) (string, error) {
	sig, err := s.sign(ctx, []byte(stringToSign(resource, expiry)))
	if err != nil {
		return "", err
	}
	return "SharedAccessSignature sr=" + url.QueryEscape(resource) +
		"&sig=" + url.QueryEscape(sig) +
		"&se=" + strconv.FormatInt(expiry.Unix(), 10), nil
}

// keySigner signs locally with a shared access key (connection-string and
// iotedgehubdev modes).
type keySigner struct {
	key []byte // decoded key; static
}

// newKeySigner decodes a base64 shared access key.
func newKeySigner(b64 string) (*keySigner, error) {
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(key) == 0 {
		// The decode error would quote part of the key: keep it out.
		return nil, fmt.Errorf("SharedAccessKey is not valid base64")
	}
	return &keySigner{key: key}, nil
}

func (k *keySigner) sign(_ context.Context, data []byte) (string, error) {
	h := hmac.New(sha256.New, k.key)
	h.Write(data)
	return base64.StdEncoding.EncodeToString(h.Sum(nil)), nil
}
