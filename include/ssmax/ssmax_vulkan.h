/*
 * ssmax on the application's own Vulkan device, with the application's own buffers.
 *
 * The interop half of the API (ssmax.h is the rest): an application that already has a VkInstance,
 * a VkDevice and a compute queue hands them to a context, and ssmax runs on them instead of on a
 * device of its own. Available in builds with the Vulkan backend.
 *
 *   1. Before creating its device, the application asks what ssmax uses
 *      (ssmax_vulkan_device_requirements) and enables those extensions and features it wants ssmax
 *      to have; all of them are optional, ssmax runs without each (more slowly, or without the
 *      statistics of `ssmax pipelines`).
 *   2. ssmax_vulkan_device_import opens the context's device over the application's handles.
 *   3. ssmax_vulkan_buffer_import wraps ranges of the application's VkBuffers as ssmax_buffer
 *      handles for ssmax_attn and ssmax_plan_execute.
 *
 * Ownership: ssmax destroys only what it made on the application's device (its command pool,
 * fence, query pool, descriptor pool and layouts, pipelines, internal buffers), when the device
 * closes (another ssmax_device_open or import, or ssmax_context_destroy). It never destroys, and
 * never waits idle on, the application's VkInstance, VkDevice, queue or imported VkBuffers; they
 * must outlive the context's device.
 *
 * Synchronisation: every ssmax call stays blocking. Each submission goes to the application's
 * queue, between lock_queue and unlock_queue when given (Vulkan requires queue submissions to be
 * externally synchronised), and ssmax waits on its own fence before the call returns: its writes
 * have then completed. The application's own work on imported buffers must have completed (or be
 * ordered before the call by the application) when it calls ssmax; ssmax records no barrier
 * against work it did not submit. Host writes through the application's mapping before the call
 * and host reads after it need no more than that (host-coherent memory).
 *
 * Validation: the application's instance carries the application's layers and debug messenger;
 * messages about ssmax's calls go there. ssmax_context_params.debug then only affects ssmax's own
 * checks, and ssmax_validation_errors does not count the application's messenger's errors.
 */
#ifndef SSMAX_SSMAX_VULKAN_H
#define SSMAX_SSMAX_VULKAN_H

#include <vulkan/vulkan.h>

#include "ssmax.h"

#ifdef __cplusplus
extern "C" {
#endif

/** What ssmax uses on a physical device, to enable when the application creates its VkDevice.
 *  Everything listed is optional for ssmax: without it ssmax still runs. */
struct ssmax_vulkan_requirements {
    /** The lowest VkApplicationInfo::apiVersion and device version ssmax runs on:
     *  VK_API_VERSION_1_1 (subgroup operations, vkGetPhysicalDeviceProperties2 and friends). */
    uint32_t min_api_version;
    /** Device extensions ssmax uses, which this device supports (static strings): at most
     *  VK_EXT_subgroup_size_control (listed also on Vulkan 1.3, where it is core: enabling a
     *  promoted extension is valid) and VK_KHR_pipeline_executable_properties. */
    const char *extensions[4];
    uint32_t extension_count;
    /** VkPhysicalDeviceSubgroupSizeControlFeatures::subgroupSizeControl (or
     *  VkPhysicalDeviceVulkan13Features): the kernels ask for the subgroup size they are shaped
     *  for. VK_TRUE when the device offers it for compute shaders. */
    VkBool32 subgroup_size_control;
    /** VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR::pipelineExecutableInfo: the
     *  driver's statistics for ssmax_pipelines (`ssmax pipelines`). VK_TRUE when offered. */
    VkBool32 pipeline_executable_info;
    /** A queue family ssmax would pick on its own: compute, preferably with timestamps (device
     *  times in the reports); -1 when the device has no compute queue. */
    int32_t queue_family;
    /* Not needed: 16-bit storage and shaderFloat16. f16 tensors are read and written as packed
     * 32-bit words and all arithmetic is fp32, so SSMAX_F16 runs on devices without them. Nor
     * computeFullSubgroups: no pipeline asks for full subgroups. */
    uint8_t reserved[32];
};

/** Fills *out for physical device pd of instance inst (the application's, created with
 *  apiVersion 1.1 or later), whose functions come from gipa. Call it before creating the VkDevice.
 *  Thread-safe; errors go to ssmax_last_error(NULL).
 *  @return SSMAX_OK; SSMAX_ERR_INVALID_ARG naming a NULL argument (*out untouched);
 *  SSMAX_ERR_UNSUPPORTED when pd is below Vulkan 1.1 or gipa lacks a 1.1 function. */
SSMAX_API int ssmax_vulkan_device_requirements(PFN_vkGetInstanceProcAddr gipa, VkInstance inst,
                                               VkPhysicalDevice pd,
                                               struct ssmax_vulkan_requirements *out);

/** The application's device, as it created it. Zero-initialise, then fill. */
struct ssmax_vulkan_device {
    VkInstance instance;
    PFN_vkGetInstanceProcAddr get_instance_proc_addr; ///< the loader's (or a layer's) entry
    VkPhysicalDevice physical_device;
    VkDevice device;
    /** The queue ssmax submits to: its family must support compute. queue may be VK_NULL_HANDLE:
     *  ssmax then gets it with vkGetDeviceQueue(device, queue_family, queue_index). */
    uint32_t queue_family, queue_index;
    VkQueue queue;
    /** VkApplicationInfo::apiVersion of the instance (0: VK_API_VERSION_1_1); at least 1.1.
     *  The device's version used is the lower of this and the physical device's. */
    uint32_t api_version;
    /** The device extensions the application enabled (VkDeviceCreateInfo). */
    const char *const *enabled_extensions;
    uint32_t enabled_extension_count;
    /** The feature chain the application created the device with (VkDeviceCreateInfo::pNext's
     *  VkPhysicalDeviceFeatures2 and its chain); NULL: none beyond core. ssmax reads
     *  subgroupSizeControl (VkPhysicalDeviceSubgroupSizeControlFeatures or Vulkan13Features),
     *  pipelineExecutableInfo, and for ssmax_device_info's fp16_storage and fp16_arith
     *  storageBuffer16BitAccess and shaderFloat16 (16BitStorage, ShaderFloat16Int8, Vulkan11 and
     *  Vulkan12 features). ssmax uses only what was enabled. */
    const VkPhysicalDeviceFeatures2 *enabled_features;
    /** Optional (both or neither): called around each of ssmax's vkQueueSubmit calls, with
     *  (lock_priv, queue_family, queue_index). */
    void (*lock_queue)(void *priv, uint32_t family, uint32_t index);
    void (*unlock_queue)(void *priv, uint32_t family, uint32_t index);
    void *lock_priv;
    /** Optional: the application's VkPipelineCache on device; ssmax creates its pipelines through
     *  it (and then keeps no cache file of its own for this device), never destroys or writes it
     *  to disk, and uses it only from calls on this context: the application synchronises other
     *  uses of it while an ssmax call runs. VK_NULL_HANDLE:
     *  ssmax's own cache, kept on disk (README, "Caches on disk"). */
    VkPipelineCache pipeline_cache;
    uint8_t reserved[24]; ///< must be zero
};

/** Closes the context's open device (as ssmax_device_open does, with its buffers and plans) and
 *  opens one over the application's device d (copied; its pointers need only live for the call).
 *  ssmax_device_current then reports it: name, limits and UUIDs from the physical device, index
 *  -1 (it is in no list), fp16_storage and fp16_arith as the application enabled them.
 *  The context need not have the Vulkan backend enabled (ssmax_context_params.backends).
 *  @return SSMAX_OK; SSMAX_ERR_INVALID_ARG naming the field (NULL handles or gipa, a queue family
 *  or index out of range, both or neither lock callbacks, reserved not zero), and then the open
 *  device stays open; SSMAX_ERR_UNSUPPORTED for a queue family without compute, Vulkan below 1.1,
 *  or a device that cannot run ssmax's work; SSMAX_ERR_BACKEND and the out-of-memory codes when a
 *  Vulkan call fails (the context then has no device open). */
SSMAX_API int ssmax_vulkan_device_import(ssmax_context *ctx, const struct ssmax_vulkan_device *d);

/** An ssmax_buffer over bytes [offset, offset + size) of the application's VkBuffer buf, on the
 *  context's imported device (ssmax_vulkan_device_import: a buffer of the application's device
 *  cannot be used on a device ssmax created). usage is the VkBufferCreateInfo::usage buf was
 *  created with: it must include VK_BUFFER_USAGE_STORAGE_BUFFER_BIT (attention binds it);
 *  ssmax_buffer_write needs VK_BUFFER_USAGE_TRANSFER_DST_BIT and ssmax_buffer_read
 *  VK_BUFFER_USAGE_TRANSFER_SRC_BIT (they copy through a staging buffer), else they return
 *  SSMAX_ERR_UNSUPPORTED naming the flag. offset is a multiple of the device's
 *  minStorageBufferOffsetAlignment, as any storage-buffer binding's. Ranges of one VkBuffer may
 *  be imported many times (give the same usage each time); ssmax_attn treats them as one buffer,
 *  so an output range overlapping an input range is refused as within one ssmax_buffer. ssmax
 *  cannot query buf's size: the range must lie within it. ssmax never frees buf or its memory:
 *  ssmax_buffer_destroy (and closing the device) drops only the handle.
 *  @return SSMAX_OK; SSMAX_ERR_NO_DEVICE without an open device; SSMAX_ERR_UNSUPPORTED when the
 *  open device is not imported; SSMAX_ERR_INVALID_ARG naming the argument (buf VK_NULL_HANDLE,
 *  size 0, offset + size overflowing, usage without STORAGE_BUFFER or other than an earlier
 *  import's of buf, offset misaligned, out NULL).
 *  *out is left untouched on failure. */
SSMAX_API int ssmax_vulkan_buffer_import(ssmax_context *ctx, VkBuffer buf, VkDeviceSize offset,
                                         VkDeviceSize size, VkBufferUsageFlags usage,
                                         ssmax_buffer **out);

/** Records one execution of plan (ssmax_plan_create) on bufs with args (NULL: the defaults) into
 *  the application's cmd, in the recording state, from a pool of the imported queue family. Nothing
 *  is submitted and nothing is waited for: the application submits cmd with its own semaphores and
 *  fences. Needs an imported device (ssmax_vulkan_device_import).
 *
 *  What ssmax records: its pipelines, one descriptor set and push constants, its dispatches and
 *  the barriers between them, a compute-to-compute barrier first (so one plan recorded twice in a
 *  row orders its scratch), with per-batch lengths or positions (args->kv_lens, q_positions) an
 *  update of the plan's own coefficient buffer (vkCmdUpdateBuffer, transfer stage, between
 *  barriers of its own), and for the attention weights a copy (transfer stage). It leaves cmd's
 *  compute pipeline, descriptor set and push constants bound to its own: rebind yours after.
 *
 *  Synchronisation the application provides:
 *  - before: its writes of Q, K and V (and its last reads of O, LSE and probs) made available to
 *    VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT with VK_ACCESS_SHADER_READ_BIT (inputs) and
 *    VK_ACCESS_SHADER_WRITE_BIT (outputs), e.g. one VkMemoryBarrier from the stage that wrote them;
 *  - after: O and LSE are written at VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT with
 *    VK_ACCESS_SHADER_WRITE_BIT, probs at VK_PIPELINE_STAGE_TRANSFER_BIT with
 *    VK_ACCESS_TRANSFER_WRITE_BIT: a barrier from those to whatever reads them next (a host read
 *    after the fence needs VK_PIPELINE_STAGE_HOST_BIT / VK_ACCESS_HOST_READ_BIT).
 *
 *  Scratch: with bufs->scratch (ssmax.h) the execution keeps its coefficients, partial results
 *  and mask counts in the application's buffer, at ssmax_plan_info.scratch_bytes from
 *  scratch_off, updating the coefficients there with vkCmdUpdateBuffer (the buffer needs
 *  VK_BUFFER_USAGE_TRANSFER_DST_BIT, and TRANSFER_SRC for the weights' copy), and allocates no
 *  device memory; without it the plan allocates its own at its first such recording.
 *
 *  Lifetimes: the plan (its descriptor sets, coefficients and scratch, kept per plan) and the
 *  buffers must outlive every submission of cmd: destroy the plan, close the device or destroy
 *  the context only after they completed. A plan's recordings share its scratch: submit them
 *  to one queue (the barrier ssmax records orders them only there), or use a plan per queue. Recording binds K and V over the plan's kv_len rows
 *  (their buffers must hold them), so every step of a loop on the same buffers shares one
 *  descriptor set; a plan records with at most 32 different sets of buffers and offsets
 *  (SSMAX_ERR_LIMIT_EXCEEDED past that: make another plan). The whole execution goes into cmd:
 *  max_work_per_submit does not cut it. ssmax_last_plan reports it; ssmax_last_device_time reads 0.
 *  On failure nothing is recorded: every check and allocation comes before the first command.
 *  @return SSMAX_OK, or the errors of ssmax_plan_execute; SSMAX_ERR_INVALID_ARG when the device
 *  is not imported or cmd is NULL. */
SSMAX_API int ssmax_vulkan_plan_record(ssmax_context *ctx, ssmax_plan *plan, VkCommandBuffer cmd,
                                       const struct ssmax_attn_buffers *bufs,
                                       const struct ssmax_exec_args *args);

#ifdef __cplusplus
}
#endif

#endif
