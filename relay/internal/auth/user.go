package auth

import (
	"crypto/md5"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// User is one account as stored in the config.
type User struct {
	// Name is the user name: 1..64 characters of valid UTF-8, without ':',
	// '"', '\\' or control characters (see [ValidateUser] for why).
	Name string
	// HA1 is MD5(name:realm:password) as 32 lower-case hex digits, used for
	// Digest. It is password-equivalent for this realm (see the package
	// documentation).
	HA1 string
	// Hash is the password hash used for Basic: bcrypt ("$2a$", "$2b$" or
	// "$2y$") or an argon2id PHC string
	// "$argon2id$v=19$m=65536,t=3,p=2$<salt>$<key>" (salt and key in standard
	// base64 without padding, as the reference implementation prints them).
	Hash string
}

// bcryptCost is the cost HashPassword uses; see there for why.
const bcryptCost = 12

// Limits on what a configured hash may ask of each verification. A Basic
// check runs for anyone on the internet who presents a known user name, so
// a typo like m=6553600 or a bcrypt cost of 20 would turn every attempt into
// a memory or CPU denial of service.
const (
	maxBcryptCost     = 16
	minBcryptCost     = bcrypt.MinCost
	maxArgonMemoryKiB = 256 * 1024
	maxArgonTime      = 16
	maxArgonThreads   = 16
	minArgonSaltLen   = 8
	maxArgonSaltLen   = 64
	minArgonKeyLen    = 16
	maxArgonKeyLen    = 64
	// bcrypt only uses the first 72 bytes of a password.
	maxBcryptPassword = 72
	maxNameRunes      = 64
)

// HashPassword returns the User for name in realm: HA1 for Digest and a
// bcrypt hash (cost 12) for Basic.
//
// Why bcrypt cost 12 rather than argon2id (both verify, see [CheckPassword]):
//   - The HA1 stored next to the hash is a fast, weakly salted MD5 that
//     Digest cannot do without. Whoever reads the config can brute-force the
//     password through HA1 at GPU speed, so a memory-hard hash for Basic
//     would not slow that attacker down at all.
//   - What the Basic hash does cost is server work on demand from the
//     internet. bcrypt needs about 4 KiB per check; argon2id with m=64 MiB
//     needs 64 MiB, so a burst of concurrent attempts from many addresses
//     (the [Limiter] is per address) could exhaust the relay's memory.
//     Cost 12 is about 250 ms of one core, and successful checks are cached.
//   - "htpasswd -nbBC 12 user pass" makes the same hash without this program.
//
// bcrypt ignores bytes past the 72nd, so longer passwords are refused rather
// than silently truncated. HashPassword is safe for concurrent use.
func HashPassword(name, realm, password string) (User, error) {
	if err := validateName(name); err != nil {
		return User{}, fmt.Errorf("name: %w", err)
	}
	if err := validateRealm(realm); err != nil {
		return User{}, fmt.Errorf("realm: %w", err)
	}
	if password == "" {
		return User{}, errors.New("password: must not be empty")
	}
	if len(password) > maxBcryptPassword {
		return User{}, fmt.Errorf("password: longer than %d bytes, which bcrypt would truncate", maxBcryptPassword)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcryptCost)
	if err != nil {
		return User{}, fmt.Errorf("hash: %w", err)
	}
	return User{
		Name: name,
		HA1:  computeHA1(name, realm, password),
		Hash: string(h),
	}, nil
}

// ValidateUser checks the syntax of u's fields, not the password (HA1 cannot
// be checked against the realm without it). Errors start with the field
// name, e.g. "ha1: must be 32 lower-case hex digits". It also refuses hashes
// whose parameters would make each check too expensive: bcrypt cost above
// 16, argon2id above 256 MiB, 16 passes or 16 lanes.
func ValidateUser(u User) error {
	if err := validateName(u.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if !isLowerHex(u.HA1, 32) {
		return errors.New("ha1: must be 32 lower-case hex digits")
	}
	if _, err := parseHash(u.Hash); err != nil {
		return fmt.Errorf("hash: %w", err)
	}
	return nil
}

// CheckPassword reports whether password matches u.Hash. It returns false
// for a hash [ValidateUser] would refuse. Argon2id keys are compared in
// constant time; bcrypt uses bcrypt.CompareHashAndPassword. This is slow by
// design (see [HashPassword]); it is safe for concurrent use.
func CheckPassword(u User, password string) bool {
	h, err := parseHash(u.Hash)
	if err != nil {
		return false
	}
	if h.bcrypt {
		if len(password) > maxBcryptPassword {
			// bcrypt would compare only the first 72 bytes.
			return false
		}
		return bcrypt.CompareHashAndPassword([]byte(u.Hash), []byte(password)) == nil
	}
	key := argon2.IDKey([]byte(password), h.salt, h.time, h.memory, h.threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(key, h.key) == 1
}

// parsedHash is a syntactically valid password hash.
type parsedHash struct {
	bcrypt bool
	// argon2id parameters
	memory, time uint32
	threads      uint8
	salt, key    []byte
}

func parseHash(s string) (parsedHash, error) {
	switch {
	case strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"), strings.HasPrefix(s, "$2y$"):
		return parseBcrypt(s)
	case strings.HasPrefix(s, "$argon2id$"):
		return parseArgon2id(s)
	case s == "":
		return parsedHash{}, errors.New("missing, want bcrypt $2b$... or $argon2id$...")
	default:
		return parsedHash{}, errors.New("unsupported format, want bcrypt $2b$... or $argon2id$...")
	}
}

func parseBcrypt(s string) (parsedHash, error) {
	// $2b$12$ + 22 characters of salt + 31 of hash.
	if len(s) != 60 {
		return parsedHash{}, errors.New("bcrypt hash must be 60 characters")
	}
	cost, err := bcrypt.Cost([]byte(s))
	if err != nil {
		return parsedHash{}, fmt.Errorf("invalid bcrypt hash: %w", err)
	}
	if cost < minBcryptCost || cost > maxBcryptCost {
		return parsedHash{}, fmt.Errorf("bcrypt cost %d out of range %d..%d", cost, minBcryptCost, maxBcryptCost)
	}
	return parsedHash{bcrypt: true}, nil
}

func parseArgon2id(s string) (parsedHash, error) {
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	parts := strings.Split(s, "$")
	if len(parts) != 6 {
		return parsedHash{}, errors.New("argon2id hash must be $argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<key>")
	}
	if parts[2] != "v=19" {
		return parsedHash{}, errors.New("argon2id version must be v=19")
	}
	params := strings.Split(parts[3], ",")
	if len(params) != 3 {
		return parsedHash{}, errors.New("argon2id parameters must be m=<KiB>,t=<passes>,p=<lanes>")
	}
	var vals [3]uint64
	for i, name := range []string{"m=", "t=", "p="} {
		digits, ok := strings.CutPrefix(params[i], name)
		if !ok || !isDigits(digits) {
			return parsedHash{}, errors.New("argon2id parameters must be m=<KiB>,t=<passes>,p=<lanes>")
		}
		v, err := strconv.ParseUint(digits, 10, 32)
		if err != nil {
			return parsedHash{}, fmt.Errorf("argon2id parameter %s: %w", strings.TrimSuffix(name, "="), err)
		}
		vals[i] = v
	}
	m, t, p := vals[0], vals[1], vals[2]
	if p < 1 || p > maxArgonThreads {
		return parsedHash{}, fmt.Errorf("argon2id lanes p=%d out of range 1..%d", p, maxArgonThreads)
	}
	if t < 1 || t > maxArgonTime {
		return parsedHash{}, fmt.Errorf("argon2id passes t=%d out of range 1..%d", t, maxArgonTime)
	}
	// Argon2 needs 8 KiB per lane; x/crypto would silently raise a smaller m,
	// producing keys no other implementation agrees with.
	if m < 8*p || m > maxArgonMemoryKiB {
		return parsedHash{}, fmt.Errorf("argon2id memory m=%d KiB out of range %d..%d", m, 8*p, maxArgonMemoryKiB)
	}
	salt, err := base64.RawStdEncoding.Strict().DecodeString(parts[4])
	if err != nil {
		return parsedHash{}, fmt.Errorf("argon2id salt: want standard base64 without padding: %w", err)
	}
	if len(salt) < minArgonSaltLen || len(salt) > maxArgonSaltLen {
		return parsedHash{}, fmt.Errorf("argon2id salt must be %d..%d bytes", minArgonSaltLen, maxArgonSaltLen)
	}
	key, err := base64.RawStdEncoding.Strict().DecodeString(parts[5])
	if err != nil {
		return parsedHash{}, fmt.Errorf("argon2id key: want standard base64 without padding: %w", err)
	}
	if len(key) < minArgonKeyLen || len(key) > maxArgonKeyLen {
		return parsedHash{}, fmt.Errorf("argon2id key must be %d..%d bytes", minArgonKeyLen, maxArgonKeyLen)
	}
	return parsedHash{memory: uint32(m), time: uint32(t), threads: uint8(p), salt: salt, key: key}, nil
}

// validateName enforces the User.Name rules. ':' would make "name:password"
// (Basic) and "name:realm:password" (HA1) ambiguous; '"' and '\\' cannot
// appear in the quoted username="..." parameter the way clients write it
// (most do not escape); control characters have no business in logs.
func validateName(name string) error {
	if name == "" {
		return errors.New("must not be empty")
	}
	if !utf8.ValidString(name) {
		return errors.New("must be valid UTF-8")
	}
	if utf8.RuneCountInString(name) > maxNameRunes {
		return fmt.Errorf("must be at most %d characters", maxNameRunes)
	}
	for _, r := range name {
		switch {
		case r == ':':
			return errors.New("must not contain ':'")
		case r == '"', r == '\\':
			return errors.New(`must not contain '"' or '\'`)
		case unicode.IsControl(r):
			return errors.New("must not contain control characters")
		}
	}
	return nil
}

// validateRealm enforces what lets the realm sit in realm="..." unescaped.
func validateRealm(realm string) error {
	if realm == "" {
		return errors.New("must not be empty")
	}
	if !utf8.ValidString(realm) {
		return errors.New("must be valid UTF-8")
	}
	for _, r := range realm {
		if r == '"' || r == '\\' || unicode.IsControl(r) {
			return errors.New(`must not contain '"', '\' or control characters`)
		}
	}
	return nil
}

func computeHA1(name, realm, password string) string {
	return md5Hex(name + ":" + realm + ":" + password)
}

func md5Hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
