// The delivery side's public face for cli/serve: start the scheduler, build its options from the loaded configuration.
// Trusts its callers to pass a validated configuration.
export { startDelivery, requestFlush, backoffMs, type DeliveryHandle, type DeliveryResult, type StartDeliveryArgs } from './scheduler.js';
export { deliveryOptionsFromConfig, queueDirFromConfig, defaultDeliveryOptions, systemClock, type Clock, type DeliveryOptions } from './options.js';
export { startDeliveryThread, type DeliveryThreadHandle } from './thread.js';
