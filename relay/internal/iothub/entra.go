package iothub

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

// EntraScope is the OAuth scope of the IoT Hub data plane.
const EntraScope = "https://iothubs.azure.net/.default"

// Entra authorizes requests with Microsoft Entra ID bearer tokens. The
// identity needs the IoT Hub Data Contributor role (or the action
// Microsoft.Devices/IotHubs/directMethods/invoke/action). It caches the
// token until its suggested refresh time, or five minutes before expiry.
// It is safe for concurrent use.
type Entra struct {
	// Credential supplies tokens, e.g. azidentity.DefaultAzureCredential.
	Credential azcore.TokenCredential
	// Now returns the current time; nil means time.Now.
	Now func() time.Time

	mu      sync.Mutex
	token   string    // guarded by mu
	refresh time.Time // guarded by mu
}

// NewDefaultEntra returns an Entra authorizer over azidentity's default
// credential chain (environment, workload identity, managed identity, Azure
// CLI, ...). Creating it does not contact Entra ID.
func NewDefaultEntra() (*Entra, error) {
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return nil, fmt.Errorf("failed to create the default Azure credential: %w", err)
	}
	return &Entra{Credential: cred}, nil
}

// Authorization returns "Bearer <token>", fetching a new token when needed.
func (e *Entra) Authorization(ctx context.Context) (string, error) {
	now := time.Now()
	if e.Now != nil {
		now = e.Now()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.token != "" && now.Before(e.refresh) {
		return e.token, nil
	}
	tok, err := e.Credential.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{EntraScope}})
	if err != nil {
		return "", fmt.Errorf("failed to get an Entra ID token for %s: %w", EntraScope, err)
	}
	e.token = "Bearer " + tok.Token
	e.refresh = tok.ExpiresOn.Add(-5 * time.Minute)
	if !tok.RefreshOn.IsZero() && tok.RefreshOn.Before(e.refresh) {
		e.refresh = tok.RefreshOn
	}
	return e.token, nil
}
