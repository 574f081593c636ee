package procs

import (
	"crypto/sha256"
	"encoding/hex"
)

// ObjectSHA256 is the SHA-256 of the embedded iter/task_file object
// (`sstrace version` prints it).
func ObjectSHA256() string {
	sum := sha256.Sum256(_ProcsBytes)
	return hex.EncodeToString(sum[:])
}
