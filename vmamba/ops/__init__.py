from .naive import cross_merge_ref, cross_scan_ref, selective_scan_ref, ss2d_scan_ref

def selective_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, out_float=True, backend=None):
    return selective_scan_ref(u, delta, A, B, C, D, delta_bias, delta_softplus, out_float)

def ss2d_selective_scan(x, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True, backend=None):
    return ss2d_scan_ref(x, delta, A, B, C, D, delta_bias, delta_softplus)

def cross_scan(x):
    return cross_scan_ref(x)

def cross_merge(ys, H, W):
    return cross_merge_ref(ys, H, W)
