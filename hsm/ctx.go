package hsm

/*
#include <stdlib.h>
#include "p11abi.h"

enum { mp_get_attribute_value_index = 24, mp_sign_init_index = 42 };

typedef unsigned long (*mp_sign_init_fn)(unsigned long, mp_mechanism *, unsigned long);
typedef unsigned long (*mp_get_attribute_value_fn)(unsigned long, unsigned long, mp_attribute *, unsigned long);

// mp_function_list_of returns the function list of miekg/pkcs11's
// struct ctx { void *handle; CK_FUNCTION_LIST_PTR sym; }, or NULL.
static void *mp_function_list_of(void *ctx) {
	if (ctx == NULL)
		return NULL;
	mp_function_list *l = ((void **)ctx)[1];
	if (l == NULL || l->version.major < 2 || l->version.major > 3 || l->fn[mp_sign_init_index] == NULL)
		return NULL;
	return l;
}

static unsigned long mp_sign_init(void *list, unsigned long session, mp_mechanism *m, unsigned long key) {
	mp_sign_init_fn f = (mp_sign_init_fn)((mp_function_list *)list)->fn[mp_sign_init_index];
	return f(session, m, key);
}

// mp_get_attribute_value calls C_GetAttributeValue, or returns
// CKR_FUNCTION_NOT_SUPPORTED (0x54) when the function list has none.
static unsigned long mp_get_attribute_value(void *list, unsigned long session, unsigned long object, mp_attribute *t, unsigned long n) {
	mp_get_attribute_value_fn f = (mp_get_attribute_value_fn)((mp_function_list *)list)->fn[mp_get_attribute_value_index];
	if (f == NULL)
		return 0x54;
	return f(session, object, t, n);
}
*/
import "C"

import (
	"errors"
	"sync"
	"unsafe"

	"github.com/miekg/pkcs11"
)

// Return values told apart here, and GetAttributeValue's buffer sizes: for
// an ID, label, 8192-bit modulus or EC point, and for a certificate.
const (
	ckrHostMemory                = 0x2
	ckrBufferTooSmall            = 0x150
	ckrFunctionNotSupported      = 0x54
	attrBufDefault, attrBufValue = 1024, 8192
)

// ctx is a loaded module: miekg/pkcs11's Ctx with two calls made directly
// through the module's function list. GetAttributeValue makes one call where
// miekg/pkcs11 makes two. SignInit keeps a mechanism's parameters (RSA-PSS)
// until the next C_Sign returns or the session closes: miekg/pkcs11 frees
// them when C_SignInit returns, but tpm2-pkcs11 1.9 reads them again in
// C_Sign (a freed CK_RSA_PKCS_PSS_PARAMS gives CKR_MECHANISM_INVALID, or
// worse), and PKCS#11 does not say how long they must live.
type ctx struct {
	*pkcs11.Ctx
	// list is the module's CK_FUNCTION_LIST, nil when miekg/pkcs11's context
	// does not have the layout of the version go.mod pins: then every call
	// goes through miekg/pkcs11.
	list        unsafe.Pointer
	attrBufSize func(ty uint) int // replaces attrBufSize when set (tests)

	mu   sync.Mutex
	held map[pkcs11.SessionHandle]*C.mp_mechanism // the signing operation's mechanism, per session
}

var _ p11 = (*ctx)(nil)

func newCtx(c *pkcs11.Ctx) *ctx {
	x := &ctx{Ctx: c, held: map[pkcs11.SessionHandle]*C.mp_mechanism{}}
	// pkcs11.Ctx (v1.1.2) is struct{ ctx *C.struct_ctx }.
	if unsafe.Sizeof(*c) == unsafe.Sizeof(uintptr(0)) {
		x.list = C.mp_function_list_of(*(*unsafe.Pointer)(unsafe.Pointer(c)))
	}
	return x
}

// SignInit starts a signature on sh, keeping the parameters of m until the
// signature is made (see ctx).
func (c *ctx) SignInit(sh pkcs11.SessionHandle, m []*pkcs11.Mechanism, key pkcs11.ObjectHandle) error {
	if c.list == nil || len(m) != 1 || len(m[0].Parameter) == 0 {
		return c.Ctx.SignInit(sh, m, key)
	}
	p := m[0].Parameter
	cm := (*C.mp_mechanism)(C.calloc(1, C.size_t(C.sizeof_mp_mechanism+len(p)))) // the parameters follow it
	if cm == nil {
		return pkcs11.Error(ckrHostMemory)
	}
	cm.mechanism, cm.pParameter, cm.ulParameterLen = C.ulong(m[0].Mechanism), unsafe.Add(unsafe.Pointer(cm), C.sizeof_mp_mechanism), C.ulong(len(p))
	copy(unsafe.Slice((*byte)(cm.pParameter), len(p)), p)
	if rv := C.mp_sign_init(c.list, C.ulong(sh), cm, C.ulong(key)); rv != 0 {
		C.free(unsafe.Pointer(cm))
		return pkcs11.Error(rv)
	}
	c.hold(sh, cm)
	return nil
}

// Sign finishes the signature on sh and then frees its mechanism.
func (c *ctx) Sign(sh pkcs11.SessionHandle, message []byte) ([]byte, error) {
	defer c.hold(sh, nil)
	return c.Ctx.Sign(sh, message)
}

// CloseSession closes sh and frees the mechanism of a signature started on
// it and never made.
func (c *ctx) CloseSession(sh pkcs11.SessionHandle) error {
	defer c.hold(sh, nil)
	return c.Ctx.CloseSession(sh)
}

// closeAllSessions closes each slot's sessions and frees every mechanism
// kept: the caller finalises the module next.
func (c *ctx) closeAllSessions(slots []uint) error {
	var err error
	for _, s := range slots {
		err = errors.Join(err, c.Ctx.CloseAllSessions(s))
	}
	c.mu.Lock()
	held := c.held
	c.held = map[pkcs11.SessionHandle]*C.mp_mechanism{}
	c.mu.Unlock()
	for _, cm := range held {
		C.free(unsafe.Pointer(cm))
	}
	return err
}

// hold makes cm the mechanism kept for sh, freeing the one kept before.
func (c *ctx) hold(sh pkcs11.SessionHandle, cm *C.mp_mechanism) {
	c.mu.Lock()
	old := c.held[sh]
	if cm != nil {
		c.held[sh] = cm
	} else {
		delete(c.held, sh)
	}
	c.mu.Unlock()
	if old != nil {
		C.free(unsafe.Pointer(old))
	}
}

// GetAttributeValue reads a of object o in one call with a buffer for each,
// where miekg/pkcs11 makes two (a round trip each on a network HSM). When a
// value does not fit, it reads them as miekg/pkcs11 does; any other refusal
// comes back as miekg/pkcs11 returns it.
func (c *ctx) GetAttributeValue(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, a []*pkcs11.Attribute) ([]*pkcs11.Attribute, error) {
	if c.list == nil || len(a) == 0 {
		return c.Ctx.GetAttributeValue(sh, o, a)
	}
	size := c.attrBufSize
	if size == nil {
		size = attrBufSize
	}
	// One block: the attributes, then a buffer of size(type) bytes for each.
	sizes, total := make([]int, len(a)), len(a)*C.sizeof_mp_attribute
	for i, x := range a {
		sizes[i] = size(x.Type)
		total += sizes[i]
	}
	block := C.calloc(1, C.size_t(total))
	if block == nil {
		return nil, pkcs11.Error(ckrHostMemory)
	}
	defer C.free(block)
	t := unsafe.Slice((*C.mp_attribute)(block), len(a))
	buf := unsafe.Add(block, len(a)*C.sizeof_mp_attribute)
	for i, x := range a {
		t[i]._type, t[i].pValue, t[i].ulValueLen = C.ulong(x.Type), buf, C.ulong(sizes[i])
		buf = unsafe.Add(buf, sizes[i])
	}
	switch rv := C.mp_get_attribute_value(c.list, C.ulong(sh), C.ulong(o), &t[0], C.ulong(len(a))); rv {
	case 0:
	case ckrBufferTooSmall, ckrFunctionNotSupported:
		return c.Ctx.GetAttributeValue(sh, o, a)
	default:
		return nil, pkcs11.Error(rv)
	}
	out := make([]*pkcs11.Attribute, len(a))
	for i, v := range t {
		if v.ulValueLen > C.ulong(sizes[i]) { // CK_UNAVAILABLE_INFORMATION, or a module that overran
			return c.Ctx.GetAttributeValue(sh, o, a)
		}
		out[i] = &pkcs11.Attribute{Type: a[i].Type, Value: C.GoBytes(v.pValue, C.int(v.ulValueLen))}
	}
	return out, nil
}

func attrBufSize(ty uint) int {
	if ty == pkcs11.CKA_VALUE {
		return attrBufValue
	}
	return attrBufDefault
}
