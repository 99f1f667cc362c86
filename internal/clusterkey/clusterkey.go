// Package clusterkey defines the Secret that holds the speakers' cluster key:
// every heartbeat between speakers carries a MAC under it, so a host on the
// LAN that does not hold the key cannot forge or alter one.
//
// The Secret lives in the speakers' namespace (ironlb-system). ironlb-ccm
// creates it with a random key when it is missing, so an install needs no
// manual step. Data entries:
//
//	key     the key new heartbeats are signed with; also accepted
//	accept  optional: a second key that is accepted too, during a rotation
//
// Rotation without a flap, each step applied after the previous one reached
// every speaker (the Secret is watched; allow a minute):
//  1. set accept to the new key (every speaker accepts both);
//  2. set key to the new key and accept to the old one (speakers sign with the new);
//  3. delete accept.
package clusterkey

import (
	"crypto/rand"
	"fmt"

	v1 "k8s.io/api/core/v1"
)

const (
	// SecretName is the Secret's name, in the speakers' namespace.
	SecretName = "ironlb-heartbeat-key"
	// DataKey is the data entry of the signing key.
	DataKey = "key"
	// DataAccept is the data entry of a key that is accepted but not used to sign.
	DataAccept = "accept"
	// MinLen is the shortest key accepted, in bytes: HMAC-SHA-256 keys shorter
	// than the hash are weaker than it.
	MinLen = 32
)

// Keys are the keys of one Secret.
type Keys struct {
	// Sign signs outgoing heartbeats.
	Sign []byte
	// Accept are the keys incoming heartbeats may be signed with: Sign first,
	// then the rotation's other key, if any.
	Accept [][]byte
}

// FromSecret reads the keys of s, or says what is wrong with it.
func FromSecret(s *v1.Secret) (Keys, error) {
	if s == nil {
		return Keys{}, fmt.Errorf("secret %s does not exist", SecretName)
	}
	sign := s.Data[DataKey]
	if len(sign) < MinLen {
		return Keys{}, fmt.Errorf("secret %s/%s: data %q holds %d bytes, want at least %d", s.Namespace, s.Name, DataKey, len(sign), MinLen)
	}
	k := Keys{Sign: sign, Accept: [][]byte{sign}}
	if acc, ok := s.Data[DataAccept]; ok {
		if len(acc) < MinLen {
			return Keys{}, fmt.Errorf("secret %s/%s: data %q holds %d bytes, want at least %d", s.Namespace, s.Name, DataAccept, len(acc), MinLen)
		}
		k.Accept = append(k.Accept, acc)
	}
	return k, nil
}

// Generate returns the data of a new Secret: one random signing key.
func Generate() (map[string][]byte, error) {
	key := make([]byte, MinLen)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate cluster key: %w", err)
	}
	return map[string][]byte{DataKey: key}, nil
}
