//go:build !cgo

package hsm

import "fmt"

// Without cgo no module can be loaded (Open returns ErrNoCgo); these stand
// in for miekg/pkcs11's types that need cgo, so that this package and every
// program built on it still compile. Their values never reach a module.

// ReturnValue is a PKCS#11 return value (CK_RV); in a cgo build it is
// miekg/pkcs11's pkcs11.Error.
type ReturnValue uint

// Error names the return value as miekg/pkcs11 does, in hex.
func (e ReturnValue) Error() string { return fmt.Sprintf("pkcs11: 0x%X", uint(e)) }

type (
	sessionHandle uint
	objectHandle  uint
	attribute     struct {
		Type  uint
		Value []byte
	}
	mechanism struct {
		Mechanism uint
		Parameter []byte
	}
	version struct{ Major, Minor byte }
	ckInfo  struct {
		CryptokiVersion, LibraryVersion    version
		ManufacturerID, LibraryDescription string
	}
	ckSlotInfo struct {
		SlotDescription, ManufacturerID string
		Flags                           uint
	}
	ckTokenInfo struct {
		Label, ManufacturerID, Model, SerialNumber string
		Flags, MaxSessionCount                     uint
	}
	ckSessionInfo struct{ State uint }
	ctx           struct{ p11 }
)

func newAttribute(typ uint, _ any) *attribute           { return &attribute{Type: typ} }
func newMechanism(m uint, _ any) *mechanism             { return &mechanism{Mechanism: m} }
func newPSSParams(hashAlg, mgf, saltLength uint) []byte { return nil }
func loadModule(string) (*ctx, error)                   { return nil, ErrNoCgo }
func (*ctx) Finalize() error                            { return nil }
func (*ctx) Destroy()                                   {}
func (*ctx) closeAllSessions([]uint) error              { return nil }

// Available returns ErrNoCgo: this program was built without cgo.
func Available() error { return ErrNoCgo }
