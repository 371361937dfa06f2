/** The defense methods' names: defined in defense (which runs them), read by pipeline, queue, api and cli. */
export type DefenseMethod = 'fgsn' | 'safelora' | 'layer' | 'antidote' | 'resta' | 'restore';
