package hsm

/*
#include <stdlib.h>
#include "p11abi.h"

enum { mp_get_attribute_value_index = 24 };

typedef unsigned long (*mp_get_attribute_value_fn)(unsigned long, unsigned long, mp_attribute *, unsigned long);

// mp_attributes_new allocates a template of n attributes and, after it,
// one buffer per attribute of the size given in sizes, in one block that
// the caller frees.
static mp_attribute *mp_attributes_new(const unsigned long *types, const unsigned long *sizes, unsigned long n) {
	unsigned long total = 0, i;
	for (i = 0; i < n; i++)
		total += sizes[i];
	mp_attribute *t = calloc(1, n * sizeof *t + total);
	if (t == NULL)
		return NULL;
	unsigned char *p = (unsigned char *)(t + n);
	for (i = 0; i < n; i++) {
		t[i].type = types[i];
		t[i].pValue = p;
		t[i].ulValueLen = sizes[i];
		p += sizes[i];
	}
	return t;
}

// mp_attribute_value returns the value of attribute i of t and its length
// in *len.
static void *mp_attribute_value(mp_attribute *t, unsigned long i, unsigned long *len) {
	*len = t[i].ulValueLen;
	return t[i].pValue;
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
	"unsafe"

	"github.com/miekg/pkcs11"
)

// PKCS#11 return values that GetAttributeValue tells apart.
const (
	ckrBufferTooSmall            = 0x150
	ckrFunctionNotSupported      = 0x54
	attrBufDefault, attrBufValue = 1024, 8192
)

// attrBufSize is the buffer GetAttributeValue offers for an attribute of
// type ty: enough for the attributes hsm reads (an ID, a label, an 8192-bit
// modulus, an EC point) and for CKA_VALUE, a certificate.
func attrBufSize(ty uint) int {
	if ty == pkcs11.CKA_VALUE {
		return attrBufValue
	}
	return attrBufDefault
}

// GetAttributeValue reads the attributes a of object o in one
// C_GetAttributeValue call, with a buffer for each (see attrBufSize), where
// miekg/pkcs11 makes two: the lengths, then the values. On a network HSM
// every call is a round trip. When a value does not fit
// (CKR_BUFFER_TOO_SMALL), or the module's function list could not be read,
// it reads them as miekg/pkcs11 does. Any other refusal is returned as
// miekg/pkcs11 returns it, as a pkcs11.Error with no values.
func (c *ctx) GetAttributeValue(sh pkcs11.SessionHandle, o pkcs11.ObjectHandle, a []*pkcs11.Attribute) ([]*pkcs11.Attribute, error) {
	if c.list == nil || len(a) == 0 {
		return c.Ctx.GetAttributeValue(sh, o, a)
	}
	size := c.attrBufSize
	if size == nil {
		size = attrBufSize
	}
	types := make([]C.ulong, len(a))
	sizes := make([]C.ulong, len(a))
	for i, x := range a {
		types[i], sizes[i] = C.ulong(x.Type), C.ulong(size(x.Type))
	}
	t := C.mp_attributes_new(&types[0], &sizes[0], C.ulong(len(a)))
	if t == nil {
		return nil, pkcs11.Error(ckrHostMemory)
	}
	defer C.free(unsafe.Pointer(t))
	switch rv := C.mp_get_attribute_value(c.list, C.ulong(sh), C.ulong(o), t, C.ulong(len(a))); rv {
	case 0:
	case ckrBufferTooSmall, ckrFunctionNotSupported:
		return c.Ctx.GetAttributeValue(sh, o, a)
	default:
		return nil, pkcs11.Error(rv)
	}
	out := make([]*pkcs11.Attribute, len(a))
	for i, x := range a {
		var n C.ulong
		p := C.mp_attribute_value(t, C.ulong(i), &n)
		out[i] = &pkcs11.Attribute{Type: x.Type}
		if n > sizes[i] { // CK_UNAVAILABLE_INFORMATION, or a module that overran
			return c.Ctx.GetAttributeValue(sh, o, a)
		}
		out[i].Value = C.GoBytes(p, C.int(n))
	}
	return out, nil
}
