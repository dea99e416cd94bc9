/* abi_compat.h -- the binding's spellings of what the limited API (stable ABI, 3.10) lacks. */
#ifndef SP_ABI_COMPAT_H
#define SP_ABI_COMPAT_H

/* Included by module_state.h after Python.h. Without Py_LIMITED_API every
 * name below is CPython's own and this file adds nothing; with it (the abi3
 * build, setup.py's SAFEPOOL_ABI3), each is the stable-ABI equivalent: the
 * same semantics, a function call where CPython has a macro. */
#ifdef Py_LIMITED_API

#include <stdlib.h>

/* PyMem_Raw* joined the stable ABI in 3.13; they are malloc/free (no GIL
 * needed) and the binding never mixes them with PyMem_Malloc. */
#if Py_LIMITED_API + 0 < 0x030D0000
#define PyMem_RawMalloc(n) malloc((n) != 0 ? (n) : 1)
#define PyMem_RawCalloc(n, size) calloc((n) != 0 ? (n) : 1, (size) != 0 ? (size) : 1)
#define PyMem_RawRealloc(p, n) realloc((p), (n) != 0 ? (n) : 1)
#define PyMem_RawFree(p) free(p)
#endif

#define PyTuple_GET_SIZE(t) PyTuple_Size(t)
#define PyTuple_GET_ITEM(t, i) PyTuple_GetItem((t), (i))
#define PyTuple_SET_ITEM(t, i, v) ((void)PyTuple_SetItem((t), (i), (v)))
#define PyList_GET_SIZE(l) PyList_Size(l)
#define PyDict_GET_SIZE(d) PyDict_Size(d)
#define PyUnicode_GET_LENGTH(s) PyUnicode_GetLength(s)
#define PyUnicode_AsUTF8(s) PyUnicode_AsUTF8AndSize((s), NULL)

#ifndef Py_SETREF
#define Py_SETREF(dst, src)                      \
    do {                                         \
        PyObject **sp_ref_ = (PyObject **)&(dst); \
        PyObject *sp_old_ = *sp_ref_;            \
        *sp_ref_ = (PyObject *)(src);            \
        Py_DECREF(sp_old_);                      \
    } while (0)
#define Py_XSETREF(dst, src)                     \
    do {                                         \
        PyObject **sp_ref_ = (PyObject **)&(dst); \
        PyObject *sp_old_ = *sp_ref_;            \
        *sp_ref_ = (PyObject *)(src);            \
        Py_XDECREF(sp_old_);                     \
    } while (0)
#endif

static inline PyObject *
sp_call_one_arg(PyObject *callable, PyObject *arg)
{
    return PyObject_CallFunctionObjArgs(callable, arg, NULL);
}
#define PyObject_CallOneArg(f, a) sp_call_one_arg((f), (a))
#define PyObject_CallMethodNoArgs(o, name) PyObject_CallMethodObjArgs((o), (name), NULL)

/* obj.name(a1, a2): PyObject_VectorcallMethod is stable ABI since 3.12 only */
static inline PyObject *
sp_call_method_2(PyObject *obj, PyObject *name, PyObject *a1, PyObject *a2)
{
    return PyObject_CallMethodObjArgs(obj, name, a1, a2, NULL);
}

/* type slots through PyType_GetSlot (any type, heap or static, since 3.10) */
#define SP_TYPE_ALLOC(tp) ((allocfunc)PyType_GetSlot((tp), Py_tp_alloc))
#define SP_TYPE_FREE(tp) ((freefunc)PyType_GetSlot((tp), Py_tp_free))
#define SP_TYPE_BASE(tp) ((PyTypeObject *)PyType_GetSlot((tp), Py_tp_base))

#else /* the version-specific build */

static inline PyObject *
sp_call_method_2(PyObject *obj, PyObject *name, PyObject *a1, PyObject *a2)
{
    PyObject *args[3] = {obj, a1, a2};
    return PyObject_VectorcallMethod(name, args, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

#define SP_TYPE_ALLOC(tp) ((tp)->tp_alloc)
#define SP_TYPE_FREE(tp) ((tp)->tp_free)
#define SP_TYPE_BASE(tp) ((tp)->tp_base)

#endif /* Py_LIMITED_API */

/* the type's __name__ for a message: a new reference, NULL with an exception set */
static inline PyObject *
sp_type_name(PyTypeObject *tp)
{
    return PyObject_GetAttrString((PyObject *)tp, "__name__");
}

#endif /* SP_ABI_COMPAT_H */
