/* MPI hello: every rank says where it runs, then all ranks sum RANK + 1 with MPI_Allreduce.
 * Built by the job itself (examples/distributed/mpi-hello/job.yml) with the cluster's mpicc.
 * The sum must be size * (size + 1) / 2; the program exits 1 if it is not. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    int rank, size, len, mine, sum;
    char host[MPI_MAX_PROCESSOR_NAME];
    const char *node = getenv("SLURMD_NODENAME"); /* the Slurm node (emulated nodes share a hostname) */

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Get_processor_name(host, &len);
    mine = rank + 1;
    MPI_Allreduce(&mine, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    printf("MPIHELLO rank=%d size=%d node=%s host=%s allreduce=%d expected=%d\n", rank, size, node ? node : host, host, sum,
           size * (size + 1) / 2);
    fflush(stdout);
    MPI_Finalize();
    return sum == size * (size + 1) / 2 ? 0 : 1;
}
