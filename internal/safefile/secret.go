package safefile

import (
	"bytes"
	"errors"
	"fmt"
)

// ErrNotSecret is wrapped by the error ReadSecret returns for a file whose
// content cannot be a secret: empty, or holding a control character.
var ErrNotSecret = errors.New("not a usable secret")

// ReadSecret reads a PIN, password or secret file as ReadPrivate does, one
// trailing newline (or CRLF) trimmed. An empty file or one with another
// control character is ErrNotSecret, never quoted, so that no wrong PIN
// spends a try. shared reports that group or others can read it. The
// caller zeroes the secret after use.
func ReadSecret(path string, max int64) (secret []byte, shared bool, err error) {
	data, fi, err := ReadPrivate(path, max)
	if err != nil {
		return nil, false, err
	}
	defer clear(data)
	s := bytes.TrimSuffix(bytes.TrimSuffix(data, []byte("\n")), []byte("\r"))
	if len(s) == 0 {
		return nil, false, &Error{Path: path, Reason: "is empty", Err: ErrNotSecret}
	}
	for i, c := range s {
		if c < 0x20 || c == 0x7f {
			return nil, false, &Error{Path: path, Err: ErrNotSecret,
				Reason: fmt.Sprintf("holds a control character at byte %d (more than one line?): it must hold the value and at most one newline", i+1)}
		}
	}
	return bytes.Clone(s), ReadableByOthers(fi), nil
}
