"""Warp kernels of one MLS-MPM substep (Hu et al. 2018, "A Moving Least Squares Material Point
Method", SIGGRAPH; quadratic B-splines) as used by PhysGaussian / PhysFlow / EndoGSim.

One substep reads a particle state (x, v, C, F, damage) and writes a *fresh* one, never in place,
so that a `wp.Tape` over many substeps has every value its adjoint needs:

    p2g          particles -> grid momentum and mass (APIC momentum + MLS stress force)
    grid_update  momentum -> velocity, gravity, damping, walls, static boxes, the tool (and, in
                 forward runs, the momentum the walls and the tool remove: the contact forces)
    g2p          grid -> particles: v, C, x, F (with the von Mises return mapping), damage

Grid arrays have shape [n + 1, n + 1, n + 1] (nodes of n cells per axis). Particle positions are
kept inside [origin + dx, origin + (n - 1) dx] so the 3x3x3 stencil never leaves the grid.
"""

import warp as wp

FIXED_COROTATED = wp.constant(0)
NEO_HOOKEAN = wp.constant(1)
STVK_HENCKY = wp.constant(2)
VISCOPLASTIC_STVK = wp.constant(3)


@wp.func
def bspline_weights(fx: wp.vec3) -> wp.mat33:
    """Quadratic B-spline weights, w[axis, node] for the nodes base + 0, 1, 2 (MLS-MPM eq. 123).

    fx = x / dx - base, in [0.5, 1.5) per axis. The three per-node vectors are the *columns*
    (the Warp-0.10 code built the matrix from vectors that way; building it from rows blows up)."""
    w0 = 0.5 * wp.cw_mul(wp.vec3(1.5) - fx, wp.vec3(1.5) - fx)
    w1 = wp.vec3(0.75) - wp.cw_mul(fx - wp.vec3(1.0), fx - wp.vec3(1.0))
    w2 = 0.5 * wp.cw_mul(fx - wp.vec3(0.5), fx - wp.vec3(0.5))
    return wp.matrix_from_cols(w0, w1, w2)


@wp.func
def hencky_strain(sigma: wp.vec3) -> wp.vec3:
    """log of the singular values, clamped at 0.01 as in PhysGaussian (an inverted particle gets a
    large, finite stress)."""
    return wp.vec3(
        wp.log(wp.max(sigma[0], 0.01)), wp.log(wp.max(sigma[1], 0.01)), wp.log(wp.max(sigma[2], 0.01))
    )


@wp.func
def kirchhoff_stress(F: wp.mat33, model: int, mu: float, lam: float) -> wp.mat33:
    """Kirchhoff stress tau = P F^T [3, 3] of the elastic deformation gradient F."""
    eye = wp.identity(n=3, dtype=float)
    J = wp.determinant(F)
    tau = wp.mat33(0.0)
    if model == NEO_HOOKEAN:
        # tau = mu (F F^T - I) + lam log(J) I (compressible neo-Hookean)
        tau = mu * (F * wp.transpose(F) - eye) + lam * wp.log(J) * eye
    else:
        U, sigma, V = wp.svd3(F)
        if model == FIXED_COROTATED:
            # tau = 2 mu (F - R) F^T + lam J (J - 1) I, R = U V^T (Stomakhin et al. 2012)
            R = U * wp.transpose(V)
            tau = 2.0 * mu * (F - R) * wp.transpose(F) + lam * J * (J - 1.0) * eye
        else:
            # St. Venant-Kirchhoff in Hencky strain eps = log(sigma): tau = U diag(2 mu eps + lam tr eps) U^T
            eps = hencky_strain(sigma)
            tr = eps[0] + eps[1] + eps[2]
            tau = U * wp.diag(2.0 * mu * eps + wp.vec3(lam * tr)) * wp.transpose(U)
    return tau


@wp.func
def von_mises_return(F_trial: wp.mat33, mu: float, yield_stress: float, viscosity: float,
                     dt: float) -> wp.mat33:
    """Viscoplastic StVK return mapping (PhysGaussian's foam, EndoGSim's tissue model): project the
    deviatoric Hencky stress s = 2 mu dev(eps) back towards the von Mises surface |s| = sqrt(2/3) tau_Y,
    by y / (1 + eta / (2 mu dt)) (Perzyna; eta = 0 is perfect plasticity)."""
    U, sigma, V = wp.svd3(F_trial)
    eps = hencky_strain(sigma)
    mean = (eps[0] + eps[1] + eps[2]) / 3.0
    dev = eps - wp.vec3(mean)
    s_norm = 2.0 * mu * wp.length(dev)
    y = s_norm - wp.sqrt(2.0 / 3.0) * yield_stress
    F_out = F_trial
    if y > 0.0:
        s_new = s_norm - y / (1.0 + viscosity / (2.0 * mu * dt))
        eps_new = (s_new / s_norm) * dev + wp.vec3(mean)
        sigma_new = wp.vec3(wp.exp(eps_new[0]), wp.exp(eps_new[1]), wp.exp(eps_new[2]))
        F_out = U * wp.diag(sigma_new) * wp.transpose(V)
    return F_out


@wp.func
def stencil_base(x: wp.vec3, origin: wp.vec3, inv_dx: float, n: int) -> wp.vec3i:
    """Lowest node of the 3x3x3 stencil, clamped to [0, n - 2] so base + 2 <= n never leaves the grid."""
    g = (x - origin) * inv_dx
    return wp.vec3i(
        wp.clamp(int(g[0] - 0.5), 0, n - 2),
        wp.clamp(int(g[1] - 0.5), 0, n - 2),
        wp.clamp(int(g[2] - 0.5), 0, n - 2),
    )


@wp.kernel
def particle_materials(
    object_id: wp.array(dtype=int),
    volume: wp.array(dtype=float),
    E: wp.array(dtype=float),  # [n_objects]
    nu: wp.array(dtype=float),
    density: wp.array(dtype=float),
    yield_stress: wp.array(dtype=float),
    viscosity: wp.array(dtype=float),
    mu: wp.array(dtype=float),  # outputs, [N]
    lam: wp.array(dtype=float),
    mass: wp.array(dtype=float),
    p_yield: wp.array(dtype=float),
    p_viscosity: wp.array(dtype=float),
):
    """Per-particle Lame parameters and mass gathered from the per-object material table."""
    p = wp.tid()
    o = object_id[p]
    e = E[o]
    n = nu[o]
    mu[p] = e / (2.0 * (1.0 + n))
    lam[p] = e * n / ((1.0 + n) * (1.0 - 2.0 * n))
    mass[p] = density[o] * volume[p]
    p_yield[p] = yield_stress[o]
    p_viscosity[p] = viscosity[o]


@wp.kernel
def p2g(
    x: wp.array(dtype=wp.vec3),
    v: wp.array(dtype=wp.vec3),
    C: wp.array(dtype=wp.mat33),
    F: wp.array(dtype=wp.mat33),
    damage: wp.array(dtype=float),
    model: wp.array(dtype=int),
    mu: wp.array(dtype=float),
    lam: wp.array(dtype=float),
    mass: wp.array(dtype=float),
    volume: wp.array(dtype=float),
    force_group: wp.array(dtype=int),  # [N], -1 = none
    force_accel: wp.array(dtype=wp.vec3),  # [n_force_groups] acceleration this substep, m/s^2
    grasp_group: wp.array(dtype=int),  # [N], -1 = none
    grasp_velocity: wp.array(dtype=wp.vec3),  # [n_grasp_groups] prescribed velocity this substep
    origin: wp.vec3,
    inv_dx: float,
    n: int,
    dt: float,
    grid_mv: wp.array3d(dtype=wp.vec3),
    grid_m: wp.array3d(dtype=float),
):
    p = wp.tid()
    base = stencil_base(x[p], origin, inv_dx, n)
    fx = (x[p] - origin) * inv_dx - wp.vec3(float(base[0]), float(base[1]), float(base[2]))
    w = bspline_weights(fx)
    m = mass[p]
    vp = v[p]
    Cp = C[p]
    g = grasp_group[p]
    if g >= 0:
        vp = grasp_velocity[g]
        Cp = wp.mat33(0.0)
    f = force_group[p]
    if f >= 0:
        vp = vp + dt * force_accel[f]
    # MLS-MPM eq. 29: the stress enters as an affine momentum term, D^-1 = 4 / dx^2 for quadratic splines
    tau = (1.0 - damage[p]) * kirchhoff_stress(F[p], model[p], mu[p], lam[p])
    affine = (-dt * volume[p] * 4.0 * inv_dx * inv_dx) * tau + m * Cp
    dx = 1.0 / inv_dx
    for i in range(3):
        for j in range(3):
            for k in range(3):
                dpos = (wp.vec3(float(i), float(j), float(k)) - fx) * dx
                weight = w[0, i] * w[1, j] * w[2, k]
                grid_mv[base[0] + i, base[1] + j, base[2] + k] += weight * (m * vp + affine * dpos)
                grid_m[base[0] + i, base[1] + j, base[2] + k] += weight * m


@wp.kernel
def grid_update(
    grid_mv: wp.array3d(dtype=wp.vec3),
    grid_m: wp.array3d(dtype=float),
    static_mask: wp.array3d(dtype=int),  # 1 = inside a static box
    min_mass: float,
    gravity: wp.vec3,
    damping: float,
    wall: int,  # 0 none, 1 slip, 2 sticky
    wall_cells: int,
    n: int,
    origin: wp.vec3,
    dx: float,
    dt: float,
    tool_active: int,
    tool_lo: wp.vec3,
    tool_hi: wp.vec3,
    tool_velocity: wp.vec3,
    record: int,  # 1: add the momentum the constraints remove to `removed` (forward runs only)
    grid_v: wp.array3d(dtype=wp.vec3),
    removed: wp.array(dtype=wp.vec3),  # [2] kg m/s taken out by walls + static boxes [0], by the tool [1]
):
    i, j, k = wp.tid()
    m = grid_m[i, j, k]
    v = wp.vec3(0.0)
    if m > min_mass:
        v = damping * (grid_mv[i, j, k] / m + dt * gravity)
        v_free = v
        if wall == 2:
            hi = n - wall_cells
            if i < wall_cells or j < wall_cells or k < wall_cells or i > hi or j > hi or k > hi:
                v = wp.vec3(0.0)
        if wall == 1:
            # slip walls: remove only the velocity component that points out of the domain
            vx = v[0]
            vy = v[1]
            vz = v[2]
            if (i < wall_cells and vx < 0.0) or (i > n - wall_cells and vx > 0.0):
                vx = 0.0
            if (j < wall_cells and vy < 0.0) or (j > n - wall_cells and vy > 0.0):
                vy = 0.0
            if (k < wall_cells and vz < 0.0) or (k > n - wall_cells and vz > 0.0):
                vz = 0.0
            v = wp.vec3(vx, vy, vz)
        if static_mask[i, j, k] != 0:
            v = wp.vec3(0.0)
        v_held = v
        if tool_active != 0:
            pos = origin + dx * wp.vec3(float(i), float(j), float(k))
            if pos[0] >= tool_lo[0] and pos[0] <= tool_hi[0] and pos[1] >= tool_lo[1]:
                if pos[1] <= tool_hi[1] and pos[2] >= tool_lo[2] and pos[2] <= tool_hi[2]:
                    v = tool_velocity
        if record != 0:
            # the momentum a constraint removes is the impulse the material gives it (only at
            # constrained nodes, to keep the two atomics uncontended)
            if wp.length_sq(v_free - v_held) > 0.0:
                wp.atomic_add(removed, 0, m * (v_free - v_held))
            if wp.length_sq(v_held - v) > 0.0:
                wp.atomic_add(removed, 1, m * (v_held - v))
    grid_v[i, j, k] = v


@wp.kernel
def cauchy_stress(
    F: wp.array(dtype=wp.mat33),
    damage: wp.array(dtype=float),
    model: wp.array(dtype=int),
    mu: wp.array(dtype=float),
    lam: wp.array(dtype=float),
    sigma: wp.array(dtype=wp.mat33),  # output [N], Pa
):
    """Cauchy stress sigma = tau / J of the stress p2g applies (damage included)."""
    p = wp.tid()
    tau = (1.0 - damage[p]) * kirchhoff_stress(F[p], model[p], mu[p], lam[p])
    sigma[p] = tau / wp.determinant(F[p])


@wp.kernel
def g2p(
    x: wp.array(dtype=wp.vec3),
    F: wp.array(dtype=wp.mat33),
    damage: wp.array(dtype=float),
    model: wp.array(dtype=int),
    mu: wp.array(dtype=float),
    yield_stress: wp.array(dtype=float),
    viscosity: wp.array(dtype=float),
    grid_v: wp.array3d(dtype=wp.vec3),
    grasp_group: wp.array(dtype=int),
    grasp_velocity: wp.array(dtype=wp.vec3),
    origin: wp.vec3,
    inv_dx: float,
    n: int,
    dt: float,
    x_min: wp.vec3,  # clamp box for positions: [origin + dx, origin + (n - 1) dx]
    x_max: wp.vec3,
    cut_active: int,
    cut_point: wp.vec3,
    cut_normal: wp.vec3,
    cut_half_width: float,
    cut_lo: wp.vec3,
    cut_hi: wp.vec3,
    cut_damage: float,
    x_out: wp.array(dtype=wp.vec3),
    v_out: wp.array(dtype=wp.vec3),
    C_out: wp.array(dtype=wp.mat33),
    F_out: wp.array(dtype=wp.mat33),
    damage_out: wp.array(dtype=float),
    clamped: wp.array(dtype=int),  # [1] counter of clamped particle positions (diagnostic, not taped)
):
    p = wp.tid()
    base = stencil_base(x[p], origin, inv_dx, n)
    fx = (x[p] - origin) * inv_dx - wp.vec3(float(base[0]), float(base[1]), float(base[2]))
    w = bspline_weights(fx)
    dx = 1.0 / inv_dx
    vp = wp.vec3(0.0)
    B = wp.mat33(0.0)
    for i in range(3):
        for j in range(3):
            for k in range(3):
                dpos = (wp.vec3(float(i), float(j), float(k)) - fx) * dx
                weight = w[0, i] * w[1, j] * w[2, k]
                vi = grid_v[base[0] + i, base[1] + j, base[2] + k]
                vp += weight * vi
                B += weight * wp.outer(vi, dpos)
    # APIC affine velocity, which MLS-MPM also uses as the velocity gradient (eq. 17, 28)
    Cp = (4.0 * inv_dx * inv_dx) * B
    F_trial = (wp.identity(n=3, dtype=float) + dt * Cp) * F[p]
    F_new = F_trial
    if model[p] == VISCOPLASTIC_STVK:
        F_new = von_mises_return(F_trial, mu[p], yield_stress[p], viscosity[p], dt)
    g = grasp_group[p]
    if g >= 0:
        vp = grasp_velocity[g]
    xn = x[p] + dt * vp
    xc = wp.vec3(
        wp.clamp(xn[0], x_min[0], x_max[0]),
        wp.clamp(xn[1], x_min[1], x_max[1]),
        wp.clamp(xn[2], x_min[2], x_max[2]),
    )
    if xc[0] != xn[0] or xc[1] != xn[1] or xc[2] != xn[2]:
        wp.atomic_add(clamped, 0, 1)
    d = damage[p]
    if cut_active != 0:
        inside = xc[0] >= cut_lo[0] and xc[0] <= cut_hi[0] and xc[1] >= cut_lo[1] and xc[1] <= cut_hi[1]
        if inside and xc[2] >= cut_lo[2] and xc[2] <= cut_hi[2]:
            if wp.abs(wp.dot(xc - cut_point, cut_normal)) < cut_half_width:
                d = wp.max(d, cut_damage)
    x_out[p] = xc
    v_out[p] = vp
    C_out[p] = Cp
    F_out[p] = F_new
    damage_out[p] = d


@wp.kernel
def find_bad_particle(
    x: wp.array(dtype=wp.vec3), v: wp.array(dtype=wp.vec3), max_speed: float, first_bad: wp.array(dtype=int)
):
    """first_bad[0] = the lowest index of a particle with a non-finite x or v, or |v| > max_speed."""
    p = wp.tid()
    xp = x[p]
    vp = v[p]
    finite = wp.isfinite(xp) and wp.isfinite(vp)
    if not finite or wp.length(vp) > max_speed:
        wp.atomic_min(first_bad, 0, p)


@wp.kernel
def add_vec3(a: wp.array(dtype=wp.vec3), b: wp.array(dtype=wp.vec3)):
    """a += b, used to seed adjoints."""
    p = wp.tid()
    a[p] = a[p] + b[p]


@wp.kernel
def add_mat33(a: wp.array(dtype=wp.mat33), b: wp.array(dtype=wp.mat33)):
    p = wp.tid()
    a[p] = a[p] + b[p]
