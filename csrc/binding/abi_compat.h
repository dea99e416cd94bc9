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

#else /* the version-specific build */

static inline PyObject *
sp_call_method_2(PyObject *obj, PyObject *name, PyObject *a1, PyObject *a2)
{
    PyObject *args[3] = {obj, a1, a2};
    return PyObject_VectorcallMethod(name, args, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

#define SP_TYPE_ALLOC(tp) ((tp)->tp_alloc)
#define SP_TYPE_FREE(tp) ((tp)->tp_free)

#endif /* Py_LIMITED_API */

/* The module of `def` that defined `tp` or one of its bases (borrowed), or
 * NULL with TypeError. PyType_GetModuleByDef is in the stable ABI from 3.13;
 * before that, the bases are walked with PyType_GetSlot. */
static inline PyObject *
sp_type_module_by_def(PyTypeObject *tp, PyModuleDef *def)
{
#if !defined(Py_LIMITED_API) || Py_LIMITED_API + 0 >= 0x030D0000
    return PyType_GetModuleByDef(tp, def);
#else
    for (PyTypeObject *t = tp; t != NULL; t = (PyTypeObject *)PyType_GetSlot(t, Py_tp_base)) {
        if (PyType_HasFeature(t, Py_TPFLAGS_HEAPTYPE)) {
            PyObject *module = PyType_GetModule(t);
            if (module != NULL && PyModule_GetDef(module) == def) {
                return module;
            }
            PyErr_Clear();
        }
    }
    PyErr_SetString(PyExc_TypeError, "no base of this type was defined by the module");
    return NULL;
#endif
}

/* the type's __name__ for a message: a new reference, NULL with an exception set */
static inline PyObject *
sp_type_name(PyTypeObject *tp)
{
    return PyObject_GetAttrString((PyObject *)tp, "__name__");
}

/* The exception being raised, taken (normalized, with its traceback) and
 * cleared: NULL when none. sp_err_give() raises it again (steals it).
 * CPython 3.12's PyErr_GetRaisedException/SetRaisedException, spelled with
 * PyErr_Fetch/Restore where those are missing (3.10, 3.11, the abi3 build). */
#if !defined(Py_LIMITED_API) && PY_VERSION_HEX >= 0x030C0000
static inline PyObject *
sp_err_take(void)
{
    return PyErr_GetRaisedException();
}

static inline void
sp_err_give(PyObject *exc)
{
    PyErr_SetRaisedException(exc);
}
#else
static inline PyObject *
sp_err_take(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_DECREF(type);
    Py_XDECREF(tb);
    return value;
}

static inline void
sp_err_give(PyObject *exc)
{
    if (exc == NULL) {
        PyErr_Restore(NULL, NULL, NULL);
        return;
    }
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
}
#endif

/* The exception being handled (an except or finally block is running):
 * a new reference, or NULL. PyErr_GetHandledException from 3.11 on. */
static inline PyObject *
sp_err_handled(void)
{
#if (!defined(Py_LIMITED_API) || Py_LIMITED_API + 0 >= 0x030B0000) && PY_VERSION_HEX >= 0x030B0000
    PyObject *value = PyErr_GetHandledException();
#else
    PyObject *type, *value, *tb;
    PyErr_GetExcInfo(&type, &value, &tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
#endif
    if (value == Py_None) {
        Py_DECREF(value);
        return NULL;
    }
    return value;
}

#endif /* SP_ABI_COMPAT_H */
