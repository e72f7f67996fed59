//go:build cgo

package hsm

import "github.com/miekg/pkcs11"

// miekg/pkcs11's types that need cgo, under this package's names, so that
// one source builds with and without cgo (binding_nocgo.go). Its constants
// need no cgo and are used as they are.
type (
	// ReturnValue is a PKCS#11 return value (CK_RV): miekg/pkcs11's
	// pkcs11.Error, which Error and PINError carry as Code.
	ReturnValue = pkcs11.Error

	sessionHandle = pkcs11.SessionHandle
	objectHandle  = pkcs11.ObjectHandle
	attribute     = pkcs11.Attribute
	mechanism     = pkcs11.Mechanism
	ckInfo        = pkcs11.Info
	ckSlotInfo    = pkcs11.SlotInfo
	ckTokenInfo   = pkcs11.TokenInfo
	ckSessionInfo = pkcs11.SessionInfo
)

var (
	newAttribute = pkcs11.NewAttribute
	newMechanism = pkcs11.NewMechanism
	newPSSParams = pkcs11.NewPSSParams
)

// Available returns nil: this program was built with cgo and can load
// PKCS#11 modules.
func Available() error { return nil }

// loadModule loads the module at path and calls C_Initialize. It returns
// a nil ctx when the file cannot be loaded as a module.
func loadModule(path string) (*ctx, error) {
	c := pkcs11.New(path)
	if c == nil {
		return nil, nil
	}
	return newCtx(c), c.Initialize()
}
