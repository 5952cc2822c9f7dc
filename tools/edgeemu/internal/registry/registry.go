// Package registry is the emulator's identity registry and twin store, persisted as one JSON
// file (state.json) in the state folder so a restarted emulator keeps keys, generation ids and
// twins.
//
// Every method is safe for concurrent use; the Store's mutex guards all state and every
// change is written to disk before the method returns.
package registry

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/certs"
	"github.com/rtsptunnel/rtsptunnel/tools/edgeemu/internal/twin"
)

// FileName is the state file inside the state folder.
const FileName = "state.json"

// KeyLen is the length of generated keys, the same as IoT Hub's (32 bytes, 44 base64 chars).
const KeyLen = 32

// ErrNotFound is returned for an unknown identity.
var ErrNotFound = errors.New("identity not found")

// ID names a device (Module empty) or a module.
type ID struct {
	Device, Module string
}

// String returns "device" or "device/module".
func (id ID) String() string {
	if id.Module == "" {
		return id.Device
	}
	return id.Device + "/" + id.Module
}

// Identity is a registered device or module.
type Identity struct {
	DeviceID string `json:"deviceId"`
	ModuleID string `json:"moduleId,omitempty"`
	// Key is the primary symmetric key.
	Key []byte `json:"key"`
	// GenerationID is the IoT Edge module generation id (modules only).
	GenerationID string `json:"generationId,omitempty"`
}

// ID returns the identity's ID.
func (i Identity) ID() ID { return ID{i.DeviceID, i.ModuleID} }

// Policy is a shared access policy of the hub (the service's credentials).
type Policy struct {
	Name string `json:"name"`
	Key  []byte `json:"key"`
}

type entry struct {
	Identity
	Twin *twin.Twin `json:"twin"`
}

type file struct {
	Policies   []Policy `json:"policies"`
	Identities []*entry `json:"identities"`
}

// Store holds identities, policies and twins.
type Store struct {
	path string           // static
	now  func() time.Time // static

	mu       sync.Mutex
	entries  map[ID]*entry // guarded by mu
	order    []ID          // guarded by mu; registration order
	policies []Policy      // guarded by mu
}

// Open loads the store from path, or starts an empty one when the file does not exist.
func Open(path string, now func() time.Time) (*Store, error) {
	s := &Store{path: path, now: now, entries: map[ID]*entry{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read state: %w", err)
	}
	var f file
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // keep twin numbers exact
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("failed to parse %s: %w", path, err)
	}
	s.policies = f.Policies
	for _, e := range f.Identities {
		if e.Twin == nil {
			e.Twin = twin.New(now())
		}
		if e.Twin.Desired.Props == nil {
			e.Twin.Desired.Props = map[string]any{}
		}
		if e.Twin.Reported.Props == nil {
			e.Twin.Reported.Props = map[string]any{}
		}
		id := e.ID()
		if _, dup := s.entries[id]; dup {
			return nil, fmt.Errorf("failed to parse %s: identity %s listed twice", path, id)
		}
		s.entries[id] = e
		s.order = append(s.order, id)
	}
	return s, nil
}

// Ensure registers id (keeping the stored key, generation id and twin when it exists) and
// returns the registered identity. A non-empty id.Key replaces the stored key; an empty one
// keeps it or generates one. A module's parent device is registered too, as IoT Hub requires.
func (s *Store) Ensure(id Identity) (Identity, error) {
	if id.DeviceID == "" {
		return Identity{}, errors.New("device id is empty")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	if id.ModuleID != "" {
		if _, ok := s.entries[ID{id.DeviceID, ""}]; !ok {
			s.add(Identity{DeviceID: id.DeviceID})
			changed = true
		}
	}
	e, ok := s.entries[id.ID()]
	if !ok {
		e = s.add(id)
		changed = true
	} else if len(id.Key) > 0 && !bytes.Equal(id.Key, e.Key) {
		e.Key = id.Key
		changed = true
	}
	if changed {
		if err := s.saveLocked(); err != nil {
			return Identity{}, err
		}
	}
	return e.Identity, nil
}

// add registers a new identity; s.mu must be held.
func (s *Store) add(id Identity) *entry {
	if len(id.Key) == 0 {
		id.Key = NewKey()
	}
	if id.ModuleID != "" && id.GenerationID == "" {
		id.GenerationID = generationID(s.now())
	}
	e := &entry{Identity: id, Twin: twin.New(s.now())}
	s.entries[id.ID()] = e
	s.order = append(s.order, id.ID())
	return e
}

// EnsurePolicy registers a shared access policy, keeping the stored key unless key is set.
func (s *Store) EnsurePolicy(name string, key []byte) (Policy, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, p := range s.policies {
		if p.Name != name {
			continue
		}
		if len(key) > 0 && !bytes.Equal(key, p.Key) {
			s.policies[i].Key = key
			if err := s.saveLocked(); err != nil {
				return Policy{}, err
			}
		}
		return s.policies[i], nil
	}
	if len(key) == 0 {
		key = NewKey()
	}
	p := Policy{Name: name, Key: key}
	s.policies = append(s.policies, p)
	if err := s.saveLocked(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// Policy returns the named policy.
func (s *Store) Policy(name string) (Policy, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.policies {
		if p.Name == name {
			return p, true
		}
	}
	return Policy{}, false
}

// Lookup returns the identity of a device (moduleID empty) or module.
func (s *Store) Lookup(deviceID, moduleID string) (Identity, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[ID{deviceID, moduleID}]
	if !ok {
		return Identity{}, false
	}
	return e.Identity, true
}

// FindModule returns the module with this module id and generation id (what the workload API
// receives).
func (s *Store) FindModule(moduleID, generationID string) (Identity, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range s.order {
		e := s.entries[id]
		if e.ModuleID == moduleID && e.GenerationID == generationID {
			return e.Identity, true
		}
	}
	return Identity{}, false
}

// HasModule reports whether any device has a module with this id.
func (s *Store) HasModule(moduleID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.entries {
		if id.Module == moduleID {
			return true
		}
	}
	return false
}

// Identities returns every identity in registration order.
func (s *Store) Identities() []Identity {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Identity, 0, len(s.order))
	for _, id := range s.order {
		out = append(out, s.entries[id].Identity)
	}
	return out
}

// ReadTwin calls fn with the identity's twin under the store's lock; fn must not keep it.
func (s *Store) ReadTwin(id ID, fn func(*twin.Twin)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[id]
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	fn(e.Twin)
	return nil
}

// UpdateTwin calls fn with a copy of the identity's twin and, when fn succeeds, stores and
// persists the copy. fn runs under the store's lock, so updates of one store are serialised.
func (s *Store) UpdateTwin(id ID, fn func(*twin.Twin) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[id]
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	t := e.Twin.Clone()
	if err := fn(t); err != nil {
		return err
	}
	old := e.Twin
	e.Twin = t
	if err := s.saveLocked(); err != nil {
		e.Twin = old
		return err
	}
	return nil
}

// saveLocked writes the state file; s.mu must be held.
func (s *Store) saveLocked() error {
	f := file{Policies: s.policies}
	for _, id := range s.order {
		f.Identities = append(f.Identities, s.entries[id])
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode state: %w", err)
	}
	// 0600: the file holds every key.
	return certs.WriteFileAtomic(s.path, append(data, '\n'), 0o600)
}

// NewKey returns a random symmetric key of KeyLen bytes.
func NewKey() []byte {
	k := make([]byte, KeyLen)
	if _, err := rand.Read(k); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return k
}

// generationID imitates IoT Edge's generation ids, which are .NET ticks (100 ns since year 1)
// of the moment the module was created.
func generationID(now time.Time) string {
	const unixEpochTicks = 621355968000000000
	return strconv.FormatInt(now.UnixNano()/100+unixEpochTicks, 10)
}
