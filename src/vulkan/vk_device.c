/*
 * Vulkan: a device and its compute queue, memory (mapped where memory is unified, device-local
 * plus staging elsewhere), user and internal buffers, and the one command buffer's submission.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vk_internal.h"

/* ---- errors ---- */

int vk_err(struct ssmax_context *ctx, VkResult r, const char *what)
{
    int code = SSMAX_ERR_BACKEND;
    if (r == VK_ERROR_OUT_OF_HOST_MEMORY)
        code = SSMAX_ERR_OUT_OF_HOST_MEMORY;
    else if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY)
        code = SSMAX_ERR_OUT_OF_DEVICE_MEMORY;
    else if (r == VK_ERROR_DEVICE_LOST)
        code = SSMAX_ERR_DEVICE_LOST;
    const char *name = r == VK_ERROR_DEVICE_LOST            ? " (device lost)"
                       : r == VK_ERROR_OUT_OF_DEVICE_MEMORY ? " (out of device memory)"
                       : r == VK_ERROR_OUT_OF_HOST_MEMORY   ? " (out of host memory)"
                                                            : "";
    return ssmax_set_error(ctx, code, "vulkan: %s failed: VkResult %d%s", what, (int)r, name);
}

/* ---- memory ---- */

static int find_mem(const VkPhysicalDeviceMemoryProperties *mp, uint32_t bits,
                    VkMemoryPropertyFlags need, VkMemoryPropertyFlags want)
{
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t i = 0; i < mp->memoryTypeCount; i++) {
            VkMemoryPropertyFlags f = mp->memoryTypes[i].propertyFlags;
            if (!(bits & (1u << i)) || (f & need) != need)
                continue;
            if (pass == 0 && (f & want) != want)
                continue;
            return (int)i;
        }
    return -1;
}

/* host: 1 = host-visible and mapped (staging, small uniforms, unified user buffers). */
static _Atomic uint64_t buf_ids;

uint64_t vk_buf_id(void)
{
    return atomic_fetch_add(&buf_ids, 1) + 1;
}

static int vk_buf_alloc(struct vk_dev *d, VkDeviceSize size, int host, struct vk_buf *out)
{
    memset(out, 0, sizeof(*out));
    out->id = vk_buf_id();
    VkBufferCreateInfo bci = { .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                               .size = size,
                               .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                                        VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                        VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                               .sharingMode = VK_SHARING_MODE_EXCLUSIVE };
    VkResult r = d->vkCreateBuffer(d->dev, &bci, NULL, &out->buf);
    if (r != VK_SUCCESS)
        return vk_err(d->base.ctx, r, "vkCreateBuffer");
    VkMemoryRequirements req;
    d->vkGetBufferMemoryRequirements(d->dev, out->buf, &req);
    int type = host ? find_mem(&d->mem, req.memoryTypeBits,
                               VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                   VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                               host == 2 ? VK_MEMORY_PROPERTY_HOST_CACHED_BIT
                                         : VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT)
                    : find_mem(&d->mem, req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0);
    if (type < 0)
        type = find_mem(&d->mem, req.memoryTypeBits, 0, 0);
    if (type < 0) {
        d->vkDestroyBuffer(d->dev, out->buf, NULL);
        out->buf = VK_NULL_HANDLE;
        return ssmax_set_error(d->base.ctx, SSMAX_ERR_BACKEND, "vulkan: no memory type for a buffer");
    }
    VkMemoryAllocateInfo mai = { .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                 .allocationSize = req.size,
                                 .memoryTypeIndex = (uint32_t)type };
    r = ssmax_fault_alloc(d->base.ctx) ? VK_ERROR_OUT_OF_DEVICE_MEMORY
                                       : d->vkAllocateMemory(d->dev, &mai, NULL, &out->mem);
    if (r == VK_SUCCESS)
        r = d->vkBindBufferMemory(d->dev, out->buf, out->mem, 0);
    if (r == VK_SUCCESS && host)
        r = d->vkMapMemory(d->dev, out->mem, 0, VK_WHOLE_SIZE, 0, &out->map);
    if (r != VK_SUCCESS) {
        int code = vk_err(d->base.ctx, r, "vkAllocateMemory");
        if (out->mem)
            d->vkFreeMemory(d->dev, out->mem, NULL);
        d->vkDestroyBuffer(d->dev, out->buf, NULL);
        memset(out, 0, sizeof(*out));
        return ssmax_set_error(d->base.ctx, code, "size: %llu bytes could not be allocated on the "
                               "device (VkResult %d)", (unsigned long long)size, (int)r);
    }
    out->size = size;
    return SSMAX_OK;
}

void vk_buf_free(struct vk_dev *d, struct vk_buf *b)
{
    if (b->buf)
        d->vkDestroyBuffer(d->dev, b->buf, NULL);
    if (b->mem)
        d->vkFreeMemory(d->dev, b->mem, NULL);
    memset(b, 0, sizeof(*b));
}

int vk_buf_ensure(struct vk_dev *d, struct vk_buf *b, VkDeviceSize size, int host)
{
    if (b->buf && b->size >= size)
        return SSMAX_OK;
    vk_buf_free(d, b);
    VkDeviceSize s = size < 4096 ? 4096 : size;
    return vk_buf_alloc(d, s, host, b);
}

/* ---- submission ---- */

int vk_cmd_begin(struct vk_dev *d)
{
    VkResult r = d->vkResetCommandBuffer(d->cmd, 0);
    VkCommandBufferBeginInfo bi = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                    .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT };
    if (r == VK_SUCCESS)
        r = d->vkBeginCommandBuffer(d->cmd, &bi);
    return r == VK_SUCCESS ? SSMAX_OK : vk_err(d->base.ctx, r, "vkBeginCommandBuffer");
}

int vk_submit_wait(struct vk_dev *d)
{
    VkResult r = d->vkEndCommandBuffer(d->cmd);
    if (r != VK_SUCCESS)
        return vk_err(d->base.ctx, r, "vkEndCommandBuffer");
    VkSubmitInfo si = { .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                        .commandBufferCount = 1,
                        .pCommandBuffers = &d->cmd };
    r = d->vkResetFences(d->dev, 1, &d->fence);
    if (r == VK_SUCCESS && ssmax_fault_lost(d->base.ctx))
        r = VK_ERROR_DEVICE_LOST;
    if (r == VK_SUCCESS) {
        if (d->lock_queue) // an imported device's queue: the application synchronises it
            d->lock_queue(d->lock_priv, d->qfam, d->qindex);
        r = d->vkQueueSubmit(d->queue, 1, &si, d->fence);
        if (d->unlock_queue)
            d->unlock_queue(d->lock_priv, d->qfam, d->qindex);
    }
    if (r != VK_SUCCESS)
        return vk_err(d->base.ctx, r, "vkQueueSubmit");
    d->submitted = 1;
    r = d->vkWaitForFences(d->dev, 1, &d->fence, VK_TRUE, 600ull * 1000000000ull);
    if (r == VK_TIMEOUT)
        return ssmax_set_error(d->base.ctx, SSMAX_ERR_DEVICE_LOST,
                               "vulkan: the device did not finish within 600 s; treating it as lost");
    return r == VK_SUCCESS ? SSMAX_OK : vk_err(d->base.ctx, r, "vkWaitForFences");
}

void vk_barrier(struct vk_dev *d, VkPipelineStageFlags src, VkAccessFlags sa,
                    VkPipelineStageFlags dst, VkAccessFlags da)
{
    VkMemoryBarrier mb = { .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                           .srcAccessMask = sa,
                           .dstAccessMask = da };
    d->vkCmdPipelineBarrier(d->cmd, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

/* ---- device ---- */

int vk_open(struct ssmax_context *ctx, void *bpriv, int idx, struct ssmax_dev *base)
{
    struct vk_inst *vi = bpriv;
    struct vk_dev *d = (struct vk_dev *)base;
    d->vi = vi;
    d->ph = &vi->phys[idx];
    VkPhysicalDevice pd = d->ph->pd;
    uint32_t nq = 0;
    vi->vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, NULL);
    VkQueueFamilyProperties qf[16];
    if (nq > 16)
        nq = 16;
    vi->vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, qf);
    int fam = -1;
    for (uint32_t i = 0; i < nq && fam < 0; i++) // a compute queue, preferably with timestamps
        if ((qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) && qf[i].timestampValidBits)
            fam = (int)i;
    for (uint32_t i = 0; i < nq && fam < 0; i++)
        if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT)
            fam = (int)i;
    d->compile_only = d->ph->compile_only;
    if (d->compile_only) {
        // Pipelines only: the device needs a queue to be created, any will do.
        snprintf(base->cannot_run, sizeof(base->cannot_run), "%s", d->ph->cannot_run);
        if (fam < 0 && nq > 0 && qf[0].queueCount > 0)
            fam = 0;
    }
    if (fam < 0)
        return ssmax_set_error(ctx, SSMAX_ERR_UNSUPPORTED, "vulkan: %s has no compute queue",
                               d->ph->props.deviceName);
    d->qfam = (uint32_t)fam;
    uint32_t tsbits = qf[fam].timestampValidBits;
    d->ts_mask = tsbits >= 64 ? ~0ull : ((1ull << tsbits) - 1);
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = { .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                    .queueFamilyIndex = d->qfam,
                                    .queueCount = 1,
                                    .pQueuePriorities = &prio };
    // Subgroup size control where offered: the GPU kernels ask for the size they are shaped for.
    // Pipeline statistics (`ssmax pipelines`) where offered; pipelines capture them only when
    // asked (VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR).
    VkPhysicalDeviceSubgroupSizeControlFeaturesEXT sgf = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES_EXT,
        .subgroupSizeControl = VK_TRUE
    };
    VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR pe = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR,
        .pipelineExecutableInfo = VK_TRUE
    };
    const char *exts[2];
    uint32_t next = 0;
    void *chain = NULL;
    if (d->ph->sg_control) {
        exts[next++] = VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME;
        sgf.pNext = chain, chain = &sgf;
    }
    if (d->ph->exec_props) {
        exts[next++] = VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME;
        pe.pNext = chain, chain = &pe;
    }
    VkDeviceCreateInfo dci = { .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                               .pNext = chain,
                               .queueCreateInfoCount = 1,
                               .pQueueCreateInfos = &qci,
                               .enabledExtensionCount = next,
                               .ppEnabledExtensionNames = exts };
    VkResult r = vi->vkCreateDevice(pd, &dci, NULL, &d->dev);
    if (r != VK_SUCCESS) {
        d->dev = VK_NULL_HANDLE;
        return vk_err(ctx, r, "vkCreateDevice");
    }
    return vk_dev_setup(ctx, d, tsbits);
}

int vk_dev_setup(struct ssmax_context *ctx, struct vk_dev *d, uint32_t tsbits)
{
    struct vk_inst *vi = d->vi;
    VkPhysicalDevice pd = d->ph->pd;
    VkResult r;
#define LOAD_D(f)                                                                                  \
    if (!(d->f = (PFN_##f)vi->vkGetDeviceProcAddr(d->dev, #f))) {                                  \
        vk_close(&d->base);                                                                        \
        return ssmax_set_error(ctx, SSMAX_ERR_BACKEND, "vulkan: the driver lacks %s", #f);         \
    }
    DEVICE_FNS(LOAD_D)
    if (d->ph->exec_props) {
        d->get_exec_props = (PFN_vkGetPipelineExecutablePropertiesKHR)vi->vkGetDeviceProcAddr(
            d->dev, "vkGetPipelineExecutablePropertiesKHR");
        d->get_exec_stats = (PFN_vkGetPipelineExecutableStatisticsKHR)vi->vkGetDeviceProcAddr(
            d->dev, "vkGetPipelineExecutableStatisticsKHR");
    }
    if (!d->queue) // an imported device may come with its queue
        d->vkGetDeviceQueue(d->dev, d->qfam, d->qindex, &d->queue);
    vi->vkGetPhysicalDeviceMemoryProperties(pd, &d->mem);
    // Unified memory: device-local and host-visible; CPU drivers and integrated GPUs map directly.
    VkPhysicalDeviceType t = d->ph->props.deviceType;
    int uma_type = 0;
    for (uint32_t i = 0; i < d->mem.memoryTypeCount; i++) {
        VkMemoryPropertyFlags f = d->mem.memoryTypes[i].propertyFlags;
        uma_type |= (f & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT) &&
                    (f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) &&
                    (f & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
    }
    d->unified = uma_type && (t == VK_PHYSICAL_DEVICE_TYPE_CPU ||
                              t == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU);
    if (ssmax_env_int("SSMAX_VK_STAGING", 0))
        d->unified = 0;

    VkCommandPoolCreateInfo cpi = { .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                    .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                    .queueFamilyIndex = d->qfam };
    VkFenceCreateInfo fci = { .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO };
    VkDescriptorSetLayoutBinding binds[NUM_BINDINGS];
    for (uint32_t i = 0; i < NUM_BINDINGS; i++)
        binds[i] = (VkDescriptorSetLayoutBinding){ .binding = i,
                                                   .descriptorType =
                                                       VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                                   .descriptorCount = 1,
                                                   .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT };
    VkDescriptorSetLayoutCreateInfo dslci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .bindingCount = NUM_BINDINGS,
        .pBindings = binds
    };
    VkPushConstantRange pcr = { VK_SHADER_STAGE_COMPUTE_BIT, 0, PARAM_WORDS * 4 };
    VkDescriptorPoolSize ps = { VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, NUM_BINDINGS * 4 };
    VkDescriptorPoolCreateInfo dpci = { .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                        .maxSets = 4,
                                        .poolSizeCount = 1,
                                        .pPoolSizes = &ps };
    VkCommandBufferAllocateInfo cai = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                        .commandBufferCount = 1 };
    VkQueryPoolCreateInfo qpci = { .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                   .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                   .queryCount = 2 };
    // A compile_only device gets what pipelines need (the layouts) and nothing that runs.
    const int run = !d->compile_only;
    if ((r = d->vkCreateDescriptorSetLayout(d->dev, &dslci, NULL, &d->dsl)) != VK_SUCCESS ||
        (run && (r = d->vkCreateCommandPool(d->dev, &cpi, NULL, &d->pool)) != VK_SUCCESS) ||
        (run && (cai.commandPool = d->pool,
                 (r = d->vkAllocateCommandBuffers(d->dev, &cai, &d->cmd)) != VK_SUCCESS)) ||
        (run && (r = d->vkCreateFence(d->dev, &fci, NULL, &d->fence)) != VK_SUCCESS) ||
        (run && (r = d->vkCreateDescriptorPool(d->dev, &dpci, NULL, &d->dpool)) != VK_SUCCESS) ||
        (run && tsbits &&
         (r = d->vkCreateQueryPool(d->dev, &qpci, NULL, &d->qpool)) != VK_SUCCESS)) {
        vk_close(&d->base);
        return vk_err(ctx, r, "device setup");
    }
    VkPipelineLayoutCreateInfo plci = { .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                        .setLayoutCount = 1,
                                        .pSetLayouts = &d->dsl,
                                        .pushConstantRangeCount = 1,
                                        .pPushConstantRanges = &pcr };
    if ((r = d->vkCreatePipelineLayout(d->dev, &plci, NULL, &d->layout)) != VK_SUCCESS) {
        vk_close(&d->base);
        return vk_err(ctx, r, "vkCreatePipelineLayout");
    }
    // The pipeline cache: the application's when it gave one (imported devices), else ssmax's
    // own, seeded from disk.
    vk_pcache_open(d, d->app_pcache);
    if (ctx->params.debug && ssmax_env_int("SSMAX_VK_PROVOKE_VALIDATION", 0)) {
        // Test hook: one invalid call (a zero-sized buffer) to prove the validation gate counts.
        VkBufferCreateInfo bad = { .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                                   .size = 0,
                                   .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT };
        VkBuffer vb = VK_NULL_HANDLE;
        if (d->vkCreateBuffer(d->dev, &bad, NULL, &vb) == VK_SUCCESS && vb)
            d->vkDestroyBuffer(d->dev, vb, NULL);
    }
    int e = run ? vk_buf_ensure(d, &d->dummy, 256, 0) : SSMAX_OK;
    if (e < 0) {
        vk_close(&d->base);
        return e;
    }
    return SSMAX_OK;
}

void vk_close(struct ssmax_dev *base)
{
    struct vk_dev *d = (struct vk_dev *)base;
    struct ssmax_context *ctx = base->ctx;
    if (d->dev) {
        // Only work we submitted is waited for: a device that never ran anything is idle, and a
        // device that cannot run (RADV's null winsys) has no idle to wait for: its
        // vkDeviceWaitIdle calls through a null winsys entry.
        // An imported device is the application's: its other queues' work is none of ours, and
        // ours is done (every submission is waited for on our fence).
        if (d->submitted && d->vkDeviceWaitIdle && !d->imported)
            d->vkDeviceWaitIdle(d->dev);
        if (d->vkDestroyBuffer) {
            vk_buf_free(d, &d->staging);
            vk_buf_free(d, &d->coef);
            vk_buf_free(d, &d->dummy);
            vk_buf_free(d, &d->scr0);
            vk_buf_free(d, &d->scr1);
            vk_buf_free(d, &d->nvis);
        }
        for (int i = 0; i < d->npipes; i++)
            d->vkDestroyPipeline(d->dev, d->pipes[i].pipe, NULL);
        if (d->vkDestroyPipelineCache)
            vk_pcache_close(d);
        if (d->layout)
            d->vkDestroyPipelineLayout(d->dev, d->layout, NULL);
        if (d->dpool)
            d->vkDestroyDescriptorPool(d->dev, d->dpool, NULL);
        if (d->dsl)
            d->vkDestroyDescriptorSetLayout(d->dev, d->dsl, NULL);
        if (d->qpool)
            d->vkDestroyQueryPool(d->dev, d->qpool, NULL);
        if (d->fence)
            d->vkDestroyFence(d->dev, d->fence, NULL);
        if (d->pool)
            d->vkDestroyCommandPool(d->dev, d->pool, NULL);
        PFN_vkDestroyDevice dd =
            d->imported          ? NULL // never the application's device
            : d->vkDestroyDevice ? d->vkDestroyDevice
                               : (PFN_vkDestroyDevice)d->vi->vkGetDeviceProcAddr(d->dev,
                                                                                 "vkDestroyDevice");
        if (dd)
            dd(d->dev, NULL);
    }
    ssmax_free(ctx, d->pipes);
    d->pipes = NULL;
    if (d->imported)
        vk_import_release(d);
}

/* ---- user buffers ---- */

int vk_buf_create(struct ssmax_dev *base, size_t size, void **out)
{
    struct vk_dev *d = (struct vk_dev *)base;
    struct vk_buf *b = ssmax_calloc(base->ctx, 1, sizeof(*b));
    if (!b)
        return ssmax_set_error(base->ctx, SSMAX_ERR_OUT_OF_HOST_MEMORY, "vulkan: out of host memory");
    // Whole 4-byte words: the kernels read f16 data (an f16 mask of odd length) as uint pairs,
    // so the word holding a buffer's last half must lie within it.
    int r = vk_buf_alloc(d, (size + 3) & ~(size_t)3, d->unified, b);
    if (r < 0) {
        ssmax_free(base->ctx, b);
        return r;
    }
    *out = b;
    return SSMAX_OK;
}

void vk_buf_destroy(struct ssmax_dev *base, void *p)
{
    struct vk_dev *d = (struct vk_dev *)base;
    if (((struct vk_buf *)p)->imported) { // the application's VkBuffer stays its own
        vk_import_buf_release(d, p);
        return;
    }
    vk_buf_free(d, p);
    ssmax_free(base->ctx, p);
}

#define STAGING_CHUNK (64ull << 20)

static int staged_copy(struct vk_dev *d, struct vk_buf *b, size_t off, void *host, size_t n,
                       int to_device)
{
    int r = vk_buf_ensure(d, &d->staging, n < STAGING_CHUNK ? n : STAGING_CHUNK, 2);
    if (r < 0)
        return r;
    for (size_t done = 0; done < n;) {
        size_t c = n - done < d->staging.size ? n - done : (size_t)d->staging.size;
        if (to_device)
            memcpy(d->staging.map, (char *)host + done, c);
        if ((r = vk_cmd_begin(d)) < 0)
            return r;
        VkBufferCopy reg = { to_device ? 0 : off + done, to_device ? off + done : 0, c };
        d->vkCmdCopyBuffer(d->cmd, to_device ? d->staging.buf : b->buf,
                           to_device ? b->buf : d->staging.buf, 1, &reg);
        if ((r = vk_submit_wait(d)) < 0)
            return r;
        if (!to_device)
            memcpy((char *)host + done, d->staging.map, c);
        done += c;
    }
    return SSMAX_OK;
}

int vk_buf_write(struct ssmax_dev *base, void *p, size_t off, const void *src, size_t n)
{
    struct vk_buf *b = p;
    if (b->imported && !(b->usage & VK_BUFFER_USAGE_TRANSFER_DST_BIT))
        return vk_import_usage_error(base->ctx, "dst", "VK_BUFFER_USAGE_TRANSFER_DST_BIT");
    if (b->map) {
        memcpy((char *)b->map + off, src, n);
        return SSMAX_OK;
    }
    return staged_copy((struct vk_dev *)base, b, off, (void *)src, n, 1);
}

int vk_buf_read(struct ssmax_dev *base, void *p, size_t off, void *dst, size_t n)
{
    struct vk_buf *b = p;
    if (b->imported && !(b->usage & VK_BUFFER_USAGE_TRANSFER_SRC_BIT))
        return vk_import_usage_error(base->ctx, "src", "VK_BUFFER_USAGE_TRANSFER_SRC_BIT");
    if (b->map) {
        memcpy(dst, (char *)b->map + off, n);
        return SSMAX_OK;
    }
    return staged_copy((struct vk_dev *)base, b, off, dst, n, 0);
}
