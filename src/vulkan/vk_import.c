/*
 * Vulkan: the application's device and buffers (include/ssmax/ssmax_vulkan.h). The imported device
 * is a struct vk_dev like ssmax's own: the VkDevice and queue are the application's, the instance
 * functions are loaded through the application's vkGetInstanceProcAddr into a vk_inst of our own
 * (never owning the VkInstance), and the rest is vk_dev_setup's, as for a device ssmax creates.
 * The device's capabilities are what the application enabled, not what the hardware offers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vk_internal.h"

#include "ssmax/ssmax_vulkan.h"

static void inst_release(struct vk_inst *vi)
{
    if (!vi)
        return;
    free(vi->phys);
    free(vi->infos);
    free(vi);
}

void vk_import_release(struct vk_dev *d)
{
    inst_release(d->vi);
    d->vi = NULL;
    d->ph = NULL;
}

void vk_import_buf_release(struct vk_dev *d, struct vk_buf *b)
{
    if (--b->refs > 0)
        return;
    for (struct vk_buf **p = &d->imports; *p; p = &(*p)->next)
        if (*p == b) {
            *p = b->next;
            break;
        }
    ssmax_free(d->base.ctx, b);
}

int vk_import_usage_error(struct ssmax_context *ctx, const char *arg, const char *flag)
{
    return ssmax_set_error(ctx, SSMAX_ERR_UNSUPPORTED,
                           "%s: the imported VkBuffer was created without %s, which the staging "
                           "copy needs (map it and copy on the host instead)", arg, flag);
}

/* A vk_inst over the application's instance with the one physical device pd, its vk_phys and
 * ssmax_device_info filled as for a listed device. ctx may be NULL (errors go to the thread). */
static int inst_load(struct ssmax_context *ctx, PFN_vkGetInstanceProcAddr gipa, VkInstance inst,
                     VkPhysicalDevice pd, struct vk_inst **out)
{
    *out = NULL;
    struct vk_inst *vi = calloc(1, sizeof(*vi));
    if (vi) {
        vi->phys = calloc(1, sizeof(*vi->phys));
        vi->infos = calloc(1, sizeof(*vi->infos));
    }
    if (!vi || !vi->phys || !vi->infos) {
        inst_release(vi);
        return ssmax_set_error(ctx, SSMAX_ERR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    }
    vi->gipa = gipa;
    vi->inst = inst;
#define LOAD_IMPORT(f)                                                                             \
    if (!(vi->f = (PFN_##f)gipa(inst, #f))) {                                                      \
        inst_release(vi);                                                                          \
        return ssmax_set_error(ctx, SSMAX_ERR_UNSUPPORTED,                                         \
                               "get_instance_proc_addr: gives no %s for the instance (Vulkan 1.1 " \
                               "needed)", #f);                                                     \
    }
    INSTANCE_FNS(LOAD_IMPORT)
#undef LOAD_IMPORT
    VkPhysicalDeviceProperties p;
    vi->vkGetPhysicalDeviceProperties(pd, &p);
    if (p.apiVersion < VK_API_VERSION_1_1) {
        inst_release(vi);
        return ssmax_set_error(ctx, SSMAX_ERR_UNSUPPORTED,
                               "physical_device: %s supports only Vulkan %u.%u; ssmax needs 1.1",
                               p.deviceName, VK_API_VERSION_MAJOR(p.apiVersion),
                               VK_API_VERSION_MINOR(p.apiVersion));
    }
    vi->phys[0].pd = pd;
    vi->ndev = 1;
    vk_fill_info(vi, 0);
    *out = vi;
    return SSMAX_OK;
}

/* The queue families of pd (at most 64), in qf; returns how many. */
static uint32_t queue_families(const struct vk_inst *vi, VkPhysicalDevice pd,
                               VkQueueFamilyProperties qf[64])
{
    uint32_t nq = 0;
    vi->vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, NULL);
    nq = nq > 64 ? 64 : nq;
    vi->vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, qf);
    return nq;
}

int ssmax_vulkan_device_requirements(PFN_vkGetInstanceProcAddr gipa, VkInstance inst,
                                     VkPhysicalDevice pd, struct ssmax_vulkan_requirements *out)
{
    ssmax_error_clear(NULL);
    if (!gipa || !inst || !pd || !out)
        return ssmax_set_error(NULL, SSMAX_ERR_INVALID_ARG, "%s: must not be NULL",
                               !gipa ? "gipa" : !inst ? "inst" : !pd ? "pd" : "out");
    struct vk_inst *vi;
    int r = inst_load(NULL, gipa, inst, pd, &vi);
    if (r < 0)
        return r;
    const struct vk_phys *ph = &vi->phys[0];
    struct ssmax_vulkan_requirements q;
    memset(&q, 0, sizeof(q));
    q.min_api_version = VK_API_VERSION_1_1;
    // What vk_open enables on a device of ssmax's own, where the device offers it.
    if (ph->sg_control) {
        q.extensions[q.extension_count++] = VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME;
        q.subgroup_size_control = VK_TRUE;
    }
    if (ph->exec_props) {
        q.extensions[q.extension_count++] = VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME;
        q.pipeline_executable_info = VK_TRUE;
    }
    VkQueueFamilyProperties qf[64];
    uint32_t nq = queue_families(vi, pd, qf);
    q.queue_family = -1;
    for (uint32_t i = 0; i < nq && q.queue_family < 0; i++) // as vk_open: timestamps preferred
        if ((qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) && qf[i].timestampValidBits)
            q.queue_family = (int32_t)i;
    for (uint32_t i = 0; i < nq && q.queue_family < 0; i++)
        if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT)
            q.queue_family = (int32_t)i;
    inst_release(vi);
    *out = q;
    return SSMAX_OK;
}

/* What the application enabled, of what ssmax reads. */
struct enabled {
    int sgc, exec, s16, f16;
    int ext_sgc, ext_exec;
};

static void read_enabled(const struct ssmax_vulkan_device *a, struct enabled *e)
{
    memset(e, 0, sizeof(*e));
    const VkBaseInStructure *s =
        a->enabled_features ? (const VkBaseInStructure *)a->enabled_features->pNext : NULL;
    for (; s; s = s->pNext) {
        switch (s->sType) {
        case VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES:
            e->sgc |= ((const VkPhysicalDeviceSubgroupSizeControlFeatures *)s)->subgroupSizeControl;
            break;
        case VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES:
            e->sgc |= ((const VkPhysicalDeviceVulkan13Features *)s)->subgroupSizeControl;
            break;
        case VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR:
            e->exec |= ((const VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR *)s)
                           ->pipelineExecutableInfo;
            break;
        case VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES:
            e->s16 |= ((const VkPhysicalDevice16BitStorageFeatures *)s)->storageBuffer16BitAccess;
            break;
        case VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES:
            e->s16 |= ((const VkPhysicalDeviceVulkan11Features *)s)->storageBuffer16BitAccess;
            break;
        case VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES:
            e->f16 |= ((const VkPhysicalDeviceShaderFloat16Int8Features *)s)->shaderFloat16;
            break;
        case VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES:
            e->f16 |= ((const VkPhysicalDeviceVulkan12Features *)s)->shaderFloat16;
            break;
        default:
            break;
        }
    }
    for (uint32_t i = 0; i < a->enabled_extension_count; i++) {
        const char *n = a->enabled_extensions[i];
        if (!n)
            continue;
        e->ext_sgc |= !strcmp(n, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
        e->ext_exec |= !strcmp(n, VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME);
    }
}

struct import_args {
    const struct ssmax_vulkan_device *src;
    struct vk_inst *vi; // handed to the device by import_open
    struct enabled en;
    uint32_t api, tsbits;
};

static int import_open(struct ssmax_context *ctx, void *priv, struct ssmax_dev *base)
{
    struct import_args *a = priv;
    struct vk_dev *d = (struct vk_dev *)base;
    const struct ssmax_vulkan_device *s = a->src;
    d->imported = 1;
    d->vi = a->vi; // the device's from here on: vk_close releases it
    a->vi = NULL;
    d->ph = &d->vi->phys[0];
    // Only what the application enabled.
    d->ph->sg_control = d->ph->sg_control && a->en.sgc &&
                        (a->en.ext_sgc || a->api >= VK_API_VERSION_1_3);
    d->ph->exec_props = d->ph->exec_props && a->en.exec && a->en.ext_exec;
    base->info = d->vi->infos[0];
    base->info.fp16_storage = a->en.s16;
    base->info.fp16_arith = a->en.f16 && a->api >= VK_API_VERSION_1_2;
    d->dev = s->device;
    d->qfam = s->queue_family;
    d->qindex = s->queue_index;
    d->queue = s->queue;
    d->lock_queue = s->lock_queue;
    d->unlock_queue = s->unlock_queue;
    d->lock_priv = s->lock_priv;
    d->app_pcache = s->pipeline_cache;
    d->ts_mask = a->tsbits >= 64 ? ~0ull : ((1ull << a->tsbits) - 1);
    return vk_dev_setup(ctx, d, a->tsbits);
}

static int all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return 0;
    return 1;
}

int ssmax_vulkan_device_import(ssmax_context *ctx, const struct ssmax_vulkan_device *s)
{
    if (!ctx)
        return ssmax_set_error(NULL, SSMAX_ERR_INVALID_ARG, "ctx: must not be NULL");
    ssmax_error_clear(ctx);
    if (!s)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "d: must not be NULL");
    // Everything that can be checked is, before the open device closes.
    const char *null = !s->instance                 ? "instance"
                       : !s->get_instance_proc_addr ? "get_instance_proc_addr"
                       : !s->physical_device        ? "physical_device"
                       : !s->device                 ? "device"
                                                    : NULL;
    if (null)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "d->%s: must not be NULL", null);
    if (!all_zero(s->reserved, sizeof(s->reserved)))
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "d->reserved: must be zero");
    if (!s->lock_queue != !s->unlock_queue)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "d->lock_queue, d->unlock_queue: set both or neither");
    if (s->enabled_extension_count && !s->enabled_extensions)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "d->enabled_extensions: NULL with enabled_extension_count %u",
                               s->enabled_extension_count);
    if (s->enabled_features &&
        s->enabled_features->sType != VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "d->enabled_features: sType %d is not "
                               "VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2",
                               (int)s->enabled_features->sType);
    uint32_t api = s->api_version ? s->api_version : VK_API_VERSION_1_1;
    if (api < VK_API_VERSION_1_1)
        return ssmax_set_error(ctx, SSMAX_ERR_UNSUPPORTED,
                               "d->api_version: Vulkan %u.%u; ssmax needs 1.1",
                               VK_API_VERSION_MAJOR(api), VK_API_VERSION_MINOR(api));
    struct import_args a = { .src = s };
    int r = inst_load(ctx, s->get_instance_proc_addr, s->instance, s->physical_device, &a.vi);
    if (r < 0)
        return r;
    const struct vk_phys *ph = &a.vi->phys[0];
    if (ph->props.apiVersion < api)
        api = ph->props.apiVersion;
    a.api = api;
    VkQueueFamilyProperties qf[64];
    uint32_t nq = queue_families(a.vi, s->physical_device, qf);
    if (s->queue_family >= nq)
        r = ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                            "d->queue_family: %u is not below the device's %u queue families",
                            s->queue_family, nq);
    else if (s->queue_index >= qf[s->queue_family].queueCount)
        r = ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                            "d->queue_index: %u is not below family %u's %u queues",
                            s->queue_index, s->queue_family, qf[s->queue_family].queueCount);
    else if (!(qf[s->queue_family].queueFlags & VK_QUEUE_COMPUTE_BIT))
        r = ssmax_set_error(ctx, SSMAX_ERR_UNSUPPORTED,
                            "d->queue_family: family %u (queue flags 0x%x) has no "
                            "VK_QUEUE_COMPUTE_BIT; ssmax needs a compute queue",
                            s->queue_family, (unsigned)qf[s->queue_family].queueFlags);
    else if (ph->compile_only)
        r = ssmax_set_error(ctx, SSMAX_ERR_UNSUPPORTED,
                            "d->physical_device: %s cannot run ssmax's work: %s",
                            ph->props.deviceName, ph->cannot_run);
    if (r < 0) {
        inst_release(a.vi);
        return r;
    }
    a.tsbits = qf[s->queue_family].timestampValidBits;
    read_enabled(s, &a.en);
    r = ssmax_device_install(ctx, &ssmax_backend_vulkan, import_open, &a);
    inst_release(a.vi); // NULL once import_open took it
    return r;
}

int ssmax_vulkan_buffer_import(ssmax_context *ctx, VkBuffer buf, VkDeviceSize offset,
                               VkDeviceSize size, VkBufferUsageFlags usage, ssmax_buffer **out)
{
    int r = ssmax_need_runnable(ctx);
    if (r < 0)
        return r;
    struct vk_dev *d = (struct vk_dev *)ctx->dev;
    if (ctx->dev->fns != &ssmax_backend_vulkan || !d->imported)
        return ssmax_set_error(ctx, SSMAX_ERR_UNSUPPORTED,
                               "ctx: the open device (%s:%d, %s) is not the application's: a "
                               "VkBuffer imports only onto a device opened with "
                               "ssmax_vulkan_device_import", ctx->dev->fns->name,
                               ctx->dev->info.index, ctx->dev->info.name);
    if (!out)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "out: must not be NULL");
    if (buf == VK_NULL_HANDLE)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "buf: must not be VK_NULL_HANDLE");
    if (!size)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "size: must be >= 1");
    if (offset > UINT64_MAX - size || offset + size > SIZE_MAX)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "offset + size: %llu + %llu overflows", (unsigned long long)offset,
                               (unsigned long long)size);
    if (!(usage & VK_BUFFER_USAGE_STORAGE_BUFFER_BIT))
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "usage: 0x%x lacks VK_BUFFER_USAGE_STORAGE_BUFFER_BIT; attention "
                               "binds the buffer as a storage buffer", (unsigned)usage);
    VkDeviceSize align = d->ph->props.limits.minStorageBufferOffsetAlignment;
    if (align > 1 && offset % align)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "offset: %llu is not a multiple of the device's "
                               "minStorageBufferOffsetAlignment %llu",
                               (unsigned long long)offset, (unsigned long long)align);
    // One vk_buf per VkBuffer: ranges of one buffer are one object to the overlap check.
    struct vk_buf *vb = d->imports;
    while (vb && vb->buf != buf)
        vb = vb->next;
    if (vb && vb->usage != usage)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "usage: 0x%x differs from the 0x%x given for this VkBuffer by an "
                               "earlier import", (unsigned)usage, (unsigned)vb->usage);
    const int fresh = !vb;
    if (fresh) {
        if (!(vb = ssmax_calloc(ctx, 1, sizeof(*vb))))
            return ssmax_set_error(ctx, SSMAX_ERR_OUT_OF_HOST_MEMORY, "buffer: out of host memory");
        vb->buf = buf;
        vb->imported = 1;
        vb->usage = usage;
        vb->id = vk_buf_id();
    }
    if ((r = ssmax_buffer_adopt(ctx, vb, (size_t)offset, (size_t)size, out)) < 0) {
        if (fresh)
            ssmax_free(ctx, vb);
        return r;
    }
    if (vb->size < offset + size)
        vb->size = offset + size;
    vb->refs++;
    if (fresh) {
        vb->next = d->imports;
        d->imports = vb;
    }
    return SSMAX_OK;
}

/* ---- recording into the application's command buffer ---- */

static int record_cb(struct ssmax_dev *dev, const struct attn_plan *base, void **state,
                     const struct attn_plan *pl, const struct attn_bufs *ab, void *arg)
{
    return vk_record(dev, base, state, pl, ab, (VkCommandBuffer)arg);
}

int ssmax_vulkan_plan_record(ssmax_context *ctx, ssmax_plan *plan, VkCommandBuffer cmd,
                             const struct ssmax_attn_buffers *bufs,
                             const struct ssmax_exec_args *args)
{
    int r = ssmax_need_runnable(ctx);
    if (r < 0)
        return r;
    if (ctx->dev->fns->id != SSMAX_BACKEND_VULKAN || !((struct vk_dev *)ctx->dev)->imported)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG,
                               "cmd: recording needs the application's own device "
                               "(ssmax_vulkan_device_import)");
    if (!cmd)
        return ssmax_set_error(ctx, SSMAX_ERR_INVALID_ARG, "cmd: must not be NULL");
    return ssmax_plan_record(ctx, plan, bufs, args, record_cb, (void *)cmd);
}
