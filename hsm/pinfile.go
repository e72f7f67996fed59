package hsm

import (
	"fmt"

	"github.com/mp-hsm/mp-hsm/internal/safefile"
)

// PINFile returns a PINSource that reads the PIN from the file at path
// each time the token asks for it (at a login, and for keys with
// CKA_ALWAYS_AUTHENTICATE before each signature), so that nothing keeps the
// PIN between logins. The file must be a regular file of at most
// safefile.MaxPIN (1 KiB) that no user but its owner and root can change;
// one trailing newline (or CRLF) is trimmed. A file that cannot be read,
// is empty, or holds another control character is an error naming the
// path, never a PIN that spends a login attempt. This is how mp-hsm's
// --pin-file and a URI's pin-source read the PIN.
func PINFile(path string) PINSource {
	return func() ([]byte, error) {
		pin, _, err := safefile.ReadSecret(path, safefile.MaxPIN)
		if err != nil {
			return nil, fmt.Errorf("PIN file %w", err)
		}
		return pin, nil
	}
}
