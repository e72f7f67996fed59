package hsm

/*
#include <stdlib.h>
#include <string.h>
#include "p11abi.h"

enum { mp_sign_init_index = 42 };

typedef unsigned long (*mp_sign_init_fn)(unsigned long, mp_mechanism *, unsigned long);

// mp_function_list_of returns the function list in miekg/pkcs11's
// struct ctx { void *handle; CK_FUNCTION_LIST_PTR sym; }, or NULL when it
// does not look like one.
static void *mp_function_list_of(void *ctx) {
	if (ctx == NULL)
		return NULL;
	mp_function_list *l = ((void **)ctx)[1];
	if (l == NULL || l->version.major < 2 || l->version.major > 3 || l->fn[mp_sign_init_index] == NULL)
		return NULL;
	return l;
}

// mp_mechanism_new copies a mechanism and its parameters into one block
// that the caller frees.
static mp_mechanism *mp_mechanism_new(unsigned long type, const void *param, unsigned long len) {
	mp_mechanism *m = calloc(1, sizeof *m + len);
	if (m == NULL)
		return NULL;
	m->mechanism = type;
	m->pParameter = m + 1;
	memcpy(m->pParameter, param, len);
	m->ulParameterLen = len;
	return m;
}

static unsigned long mp_sign_init(void *list, unsigned long session, mp_mechanism *m, unsigned long key) {
	mp_sign_init_fn f = (mp_sign_init_fn)((mp_function_list *)list)->fn[mp_sign_init_index];
	return f(session, m, key);
}
*/
import "C"

import (
	"errors"
	"sync"
	"unsafe"

	"github.com/miekg/pkcs11"
)

// ckrHostMemory is CKR_HOST_MEMORY.
const ckrHostMemory = 0x2

// ctx is a loaded module: miekg/pkcs11's Ctx, except that a signing
// mechanism with parameters (RSA-PSS) keeps them until the signature is
// made. PKCS#11 does not say how long the caller must keep the
// parameters given to C_SignInit; miekg/pkcs11 frees its copy when
// C_SignInit returns, and tpm2-pkcs11 1.9 reads them again in C_Sign (a
// freed CK_RSA_PKCS_PSS_PARAMS gives CKR_MECHANISM_INVALID, or worse). So
// such a C_SignInit is made here, through the module's function list as
// miekg/pkcs11 loaded it, with a copy of the mechanism that lives until
// the next C_Sign on the session returns or the session is closed.
// Mechanisms without parameters go through miekg/pkcs11 unchanged.
// GetAttributeValue, too, calls the module directly (see attrcall.go).
type ctx struct {
	*pkcs11.Ctx
	// list is the module's CK_FUNCTION_LIST, nil when miekg/pkcs11's
	// context does not have the layout of the version go.mod pins: then
	// every call goes through miekg/pkcs11 as it is.
	list unsafe.Pointer

	// attrBufSize, when set, replaces attrBufSize (tests: values that do
	// not fit).
	attrBufSize func(ty uint) int

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
	cm := C.mp_mechanism_new(C.ulong(m[0].Mechanism), unsafe.Pointer(&p[0]), C.ulong(len(p)))
	if cm == nil {
		return pkcs11.Error(ckrHostMemory)
	}
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

// closeAllSessions closes every session of each of slots in one call per
// slot (C_CloseAllSessions), and frees every mechanism kept: the caller
// finalises the module next, so no session of this load is left.
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
