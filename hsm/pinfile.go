package hsm

import (
	"fmt"

	"github.com/mp-hsm/mp-hsm/internal/safefile"
)

// PINFile returns a PINSource that reads the PIN from the file at path
// each time the token asks for it (at a login, and for keys with
// CKA_ALWAYS_AUTHENTICATE before each signature), so that nothing keeps the
// PIN between logins. The file must be a regular file of at most
// safefile.MaxPIN (1 KiB); one trailing newline (or CRLF) is trimmed. A file
// that cannot be read, is empty, or holds another control character is an
// error naming the path, never a PIN that spends a login attempt; so is a
// file that a user other than root and the program's own can change
// (safefile.ErrUnsafe). Keep it readable by the program's user alone
// (mp-hsm warns when group or others can read it). This is how mp-hsm's
// --pin-file reads the PIN.
func PINFile(path string) PINSource {
	return func() ([]byte, error) {
		pin, _, err := safefile.ReadSecret(path, safefile.MaxPIN)
		if err != nil {
			return nil, fmt.Errorf("PIN file %w", err)
		}
		return pin, nil
	}
}
