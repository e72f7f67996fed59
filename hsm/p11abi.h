// The few PKCS#11 types that hsm's direct calls into a module's function
// list need (ctx.go), as pkcs11.h declares them
// (packed on Windows, as miekg/pkcs11 builds them there).
#ifndef MP_P11ABI_H
#define MP_P11ABI_H

#ifdef _WIN32
#pragma pack(push, cryptoki, 1)
#endif
typedef struct {
	unsigned long mechanism;
	void *pParameter;
	unsigned long ulParameterLen;
} mp_mechanism;

typedef struct {
	unsigned long type;
	void *pValue;
	unsigned long ulValueLen;
} mp_attribute;

typedef struct {
	unsigned char major, minor;
} mp_version;

// CK_FUNCTION_LIST up to C_Sign: C_GetAttributeValue is the 25th function,
// C_SignInit the 43rd.
typedef struct {
	mp_version version;
	void *fn[44];
} mp_function_list;
#ifdef _WIN32
#pragma pack(pop, cryptoki)
#endif

#endif
