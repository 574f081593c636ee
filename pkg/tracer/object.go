package tracer

import (
	"crypto/sha256"
	"encoding/hex"
)

// ObjectSHA256 is the SHA-256 of the BPF object this binary embeds for its
// architecture (`sstrace version` prints it).
func ObjectSHA256() string {
	sum := sha256.Sum256(_TracerBytes)
	return hex.EncodeToString(sum[:])
}
